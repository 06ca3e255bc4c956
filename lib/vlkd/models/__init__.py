"""Models: frame encoders (2D, 3D), the teacher (LM^T + V^T), the student and its distillation head."""
