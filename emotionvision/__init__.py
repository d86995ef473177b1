"""EmotionVision: train and study facial-emotion image classifiers.

Importing the package does nothing: the commands live in `emotionvision.cli`, the library below them in
`data`, `models`, `callbacks`, `reporting`, `evaluation`, `inference`, `rundir` and `errors`."""
