"""``advmon profile fit --topic``: a window of production traffic read from the real broker."""

import orjson

from monitor.detect.profiles import Profile
from streams.produce import produce
from streams.topics import Topics, create_topics
from tests.streams.conftest import advmon


def test_profile_fit_reads_its_window_from_the_topic(kafka, prefix, tmp_path):
    from monitor.settings import Settings

    topics = Topics.from_settings(Settings.load({"topic_prefix": prefix}, environ={}))
    create_topics(kafka.bootstrap, topics.specs(2))
    import numpy as np

    rng = np.random.default_rng(0)
    start = 1796083200
    records = [orjson.dumps({"event_id": str(i), "ts": start + i, "client_id": f"c{i % 7}", "model": "m",
                             "input": {"features": rng.random(6).tolist()},
                             "prediction": {"label": str(i % 2), "confidence": 0.8}}) for i in range(900)]
    produce(kafka.bootstrap, topics.inference_logs, records)
    result = advmon("profile", "fit", "--topic", topics.inference_logs, "--bootstrap", kafka.bootstrap,
                    "--since", str(start + 100), "--until", str(start + 700), "-o", str(tmp_path / "p.npz"),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    profile = Profile.load(str(tmp_path / "p.npz"))
    assert profile.get("m", "features").dim == 6 and "input_anomaly_rate" in profile.baselines["m"]
