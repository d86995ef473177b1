"""The commands (`emotionvision-train`, `-eval`, `-predict`, `-export`, `-compare`, `-crosseval`) and
the Hydra plumbing only they use: run directories and resume, cross-validation sweeps, DDP ranks and
one-line usage errors. Nothing below this package imports it."""
