"""fastflow: adaptive scanning microscopy."""
