"""``csd-fast export``: cut the student out of a checkpoint into one safetensors file."""
from __future__ import annotations

from pathlib import Path

from ..fileio import check_writable_dir
from ..student_io import load_model, save_student
from .common import model_hints, network_at


def run(args) -> int:
    if Path(args.output).suffix != ".safetensors":
        raise ValueError(f"-o: expected a file name ending in .safetensors, got {args.output!r}")
    check_writable_dir(Path(args.output).parent, "-o")
    loaded = load_model(args.model, **model_hints(args))
    if loaded.kind == "student":
        raise ValueError(f"--model: {args.model} is already an exported student; export needs a checkpoint or teacher")
    student, width = network_at(loaded, args.width)
    path = save_student(student, args.output, width=width, source=str(args.model))
    teacher_params = loaded.model.num_params(1.0)
    params = sum(p.numel() for p in student.parameters())
    print(f"wrote {path} ({student.arch}, width {width:g}: {params:,} parameters, "
          f"{teacher_params / params:.1f}x fewer than the teacher's {teacher_params:,})")
    print(f"load it with: csd_fast.load_student({str(path)!r})")
    return 0
