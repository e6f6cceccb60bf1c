"""Reports built from the MLflow runs (`vidtempo zoo compare`)."""
