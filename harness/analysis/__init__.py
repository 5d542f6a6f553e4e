"""Bridge-Garden analysis: a finite-state teacher with exact per-token risk (kappa), exposure bias, the study of
distillation methods on it, heat maps, and a teacher-only risk estimate for real models."""
