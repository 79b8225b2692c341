// A small work-sharing thread pool for the CPU conv ops (cpu_conv.cpp).
//
// Why not at::parallel_for (OpenMP): OpenMP splits the rows statically and every call ends in a
// barrier that waits for all threads to arrive, so on a shared or oversubscribed machine one
// descheduled thread stalls the whole call for a scheduler time slice (we measured 50-300x
// slowdowns of 1-ms convolutions with 2 threads under load). Here the calling thread and the
// workers claim chunks of rows from one atomic counter and the call returns when every chunk is
// *done*: a worker that wakes late finds nothing left and costs nothing.
// Workers and the caller spin briefly (back-to-back layers), then sleep on condition variables.
#pragma once
#include <ATen/Parallel.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <immintrin.h>

namespace csd_cpu {

class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }

  // body(begin, end) over [0, n) in chunks of ``chunk``; at most at::get_num_threads() threads.
  void run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& body) {
    const int threads = std::max(1, at::get_num_threads());
    const int64_t chunks = (n + chunk - 1) / chunk;
    if (threads == 1 || chunks <= 1) {
      if (n > 0) body(0, n);
      return;
    }
    std::lock_guard<std::mutex> one_job(run_lock_);  // one job at a time (calls from several Python threads)
    while ((int)workers_.size() < threads - 1) {
      const int index = (int)workers_.size();
      workers_.emplace_back([this, index] { worker(index); });
    }
    {
      active_ = threads - 1;
      std::lock_guard<std::mutex> g(m_);
      body_ = &body, n_ = n, chunk_ = chunk, chunks_ = chunks;
      done_.store(0);
      epoch_ += 1;
      state_.store((uint64_t)epoch_ << 32);
    }
    cv_.notify_all();
    const uint32_t epoch = epoch_;
    work(epoch);
    for (int spins = 0; spins < kSpins && done_.load(std::memory_order_acquire) < chunks; ++spins) _mm_pause();
    if (done_.load(std::memory_order_acquire) < chunks) {  // a worker still holds a chunk: sleep until it is done
      std::unique_lock<std::mutex> g(m_);
      done_cv_.wait(g, [&] { return done_.load(std::memory_order_acquire) >= chunks; });
    }
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  // Claim and run chunks of job ``epoch`` until none is left (or a newer job started).
  void work(uint32_t epoch) {
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      int64_t idx;
      do {
        if ((uint32_t)(s >> 32) != epoch) return;
        idx = (int64_t)(s & 0xffffffffu);
        if (idx >= chunks_) return;
      } while (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel));
      const int64_t b = idx * chunk_;
      (*body_)(b, std::min(n_, b + chunk_));
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks_) {
        std::lock_guard<std::mutex> g(m_);  // the caller may be asleep on done_cv_
        done_cv_.notify_all();
      }
    }
  }

  // Worker ``index`` joins the jobs that want at least index + 1 helpers.
  void worker(int index) {
    uint32_t seen = 0;
    for (;;) {
      // spin a little for the next layer's job, then sleep
      for (int i = 0; i < kSpins && (uint32_t)(state_.load(std::memory_order_acquire) >> 32) == seen && !stop_.load(); ++i)
        _mm_pause();
      uint32_t epoch;
      bool join;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stop_.load() || epoch_ != seen; });
        if (stop_.load()) return;
        epoch = seen = epoch_;
        join = index < active_;
      }
      if (join) work(epoch);
    }
  }

  std::mutex run_lock_, m_;
  // short spins (~tens of microseconds): enough for back-to-back layers, cheap on a busy machine
  static constexpr int kSpins = 2000;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> state_{0};  // epoch << 32 | next chunk
  std::atomic<int64_t> done_{0};
  uint32_t epoch_ = 0;
  int active_ = 0;
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0, chunk_ = 1, chunks_ = 0;
};

}  // namespace csd_cpu
