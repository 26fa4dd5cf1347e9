"""MNIST Studio's core: data, preprocessing, models, training, runs, storage, prediction, evaluation, plots.

Import the modules themselves (`from mnist_core.studio import Studio`); TensorFlow loads only in the
modules that need it, when they are first imported, so the app can show its page before the model is ready.
"""

import os

# TensorFlow's C++ info and warning lines are noise to users; errors still show. (A few lines printed
# before absl's logging starts cannot be silenced this way.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
