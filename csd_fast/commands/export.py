"""``csd-fast export``: cut the student out of a checkpoint into one safetensors file, or write it as ONNX."""
from __future__ import annotations

from ..student_io import load_model, save_student
from .common import model_hints, network_at


def run(args) -> int:
    if args.format != "onnx" and args.opset is not None:
        raise ValueError("--opset: only applies with --format onnx")
    loaded = load_model(args.model, **model_hints(args))
    if args.format == "onnx":
        return _onnx(loaded, args)
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


def _onnx(loaded, args) -> int:
    """The student (a student file as it is; a checkpoint or teacher at ``--width``) as one ONNX file."""
    from ..onnx_export import MIN_OPSET, export_onnx

    student, width = network_at(loaded, args.width)
    try:
        path = export_onnx(student, args.output, opset=args.opset or MIN_OPSET)
    except ModuleNotFoundError as err:
        raise ValueError(f"--format onnx: {err}") from err
    print(f"wrote {path} ({student.arch} x{student.scale}, width {width:g}; input 'lr' [B, 3, H, W] in [0, 1], "
          "output 'sr', dynamic batch, height and width)")
    return 0
