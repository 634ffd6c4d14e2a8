import sys

from contract.tf_logging import quiet_tensorflow

# TensorFlow's start-up lines (cpu_feature_guard, oneDNN) off unless AEC_TF_VERBOSE=1; before it is imported
quiet_tensorflow()

from training.cli import main

sys.exit(main())
