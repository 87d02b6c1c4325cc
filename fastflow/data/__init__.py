"""Data shipped with fastflow: the default ERD model (``erd-default.npz``) and its card."""
