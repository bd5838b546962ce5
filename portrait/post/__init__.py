"""Post-processing stages: face fusion, colour transfer, skin retouch, super-resolution, ranking."""
