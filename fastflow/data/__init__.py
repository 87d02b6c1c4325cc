"""Data shipped with fastflow: the default ERD model (``erd-default.safetensors``) and its card."""
