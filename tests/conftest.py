"""Test isolation: Prefect and MLflow never touch the user's ~/.prefect or the repo's mlruns/."""

import atexit
import os
import shutil
import tempfile

# Set before anything imports prefect: its settings are read at import time.
_HOME = tempfile.mkdtemp(prefix="reviewgru-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = os.path.join(_HOME, "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_HOME}/mlflow/mlflow.db"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.makedirs(os.path.join(_HOME, "mlflow"), exist_ok=True)
