"""End-to-end analysis pipelines built from the spinedx models."""
