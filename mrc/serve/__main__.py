"""``python -m mrc.serve CHECKPOINT_DIR``: the HTTP API and web page (code: :mod:`mrc.serve.app`)."""
import sys

try:
    from mrc.serve.app import main
except ModuleNotFoundError as e:  # the serve extra is not installed
    if e.name not in ("fastapi", "starlette", "uvicorn", "pydantic"):
        raise
    print(f"error: python -m mrc.serve needs {e.name}; install the serve extra: pip install -e '.[serve]'",
          file=sys.stderr)
    raise SystemExit(2) from None

if __name__ == "__main__":
    raise SystemExit(main())
