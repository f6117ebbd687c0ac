"""Faust agents, one module each: scoring, control, drift, outliers, performance, retraining."""
