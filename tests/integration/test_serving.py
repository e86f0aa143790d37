"""The registered model serves raw text: through `mlflow models serve` and without our source tree.

The model is a tiny untrained GRU registered by the real `register_model`: serving mechanics do
not depend on how well it was trained, and training one here would only cost time.
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.records import Evaluation, TokenizedData, TrainedModel
from tasks.registry.register import register_model
from tasks.tokenize.tokenizer import Vocab
from tasks.train.model import build_language_model
from tests.integration.servers import free_port, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOKENS = ["[PAD]", "[UNK]", "the", "blender", "is", "great", "."]
METRICS = {
    "test_loss": 1.0,
    "test_perplexity": 2.7,
    "test_top1": 0.5,
    "test_top5": 0.9,
    "unigram_perplexity": 6.0,
    "bigram_perplexity": 4.0,
}


@pytest.fixture
def champion_uri(tmp_path: Path, mlflow_store: str) -> str:
    build_language_model(len(TOKENS), 4, 4).save(tmp_path / "model.keras")
    Vocab(TOKENS, [0, 0, 5, 4, 3, 2, 1], lowercase=True).save(tmp_path / "vocab.json")
    config = PipelineConfig()
    tracking.configure_mlflow()
    run_id = tracking.start_run(config, flow_run_id=None)
    registration = register_model(
        run_id,
        TrainedModel(
            path=tmp_path / "model.keras",
            epochs_run=1,
            best_epoch=1,
            history={},
            train_seconds=1.0,
            tokens_per_s=1.0,
            padding_fraction=0.0,
        ),
        TokenizedData(dir=tmp_path, digest="d", vocab_size=7, reviews={}, tokens={}, oov_rate={}),
        Evaluation(metrics=METRICS, test_digest="t", champion=None),
        config,
    )
    assert registration.promoted
    return "models:/reviewgru@champion"


def test_mlflow_models_serve_answers_invocations(champion_uri: str, tmp_path: Path) -> None:
    port = free_port()
    venv_bin = Path(sys.executable).parent  # as after `source .venv/bin/activate`
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", champion_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        body = json.dumps(
            {
                "dataframe_records": [
                    {"text": "The blender is", "top_k": 3},
                    {"text": "great", "top_k": 2},
                ]
            }
        )
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    # One prediction per input row, each with its own top_k candidates.
    assert [row["text"] for row in predictions] == ["The blender is", "great"]
    assert [len(row["next"]) for row in predictions] == [3, 2]
    probabilities = [candidate["p"] for candidate in predictions[0]["next"]]
    assert probabilities == sorted(probabilities, reverse=True)
    words = {c["word"] for row in predictions for c in row["next"]}
    assert words <= set(TOKENS[2:])


def test_model_loads_with_only_what_it_ships(champion_uri: str, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != {str(REPO)!r}]
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({champion_uri!r})
        import tasks
        assert not tasks.__file__.startswith({str(REPO / "tasks")!r}), tasks.__file__
        print(len(model.predict(pd.DataFrame({{"text": ["the blender"]}}))["next"][0]))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=os.environ, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "5"
    assert MlflowClient().get_model_version("reviewgru", "1").tags["gate.decision"] == "promoted"
