"""The data half of the DVC pipeline, run for real in a throw-away copy of the repo."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, SHARED_WIKITEXT
from tests.helpers import TINY_MODEL, TINY_TRAIN
from tools.new_user_check import copy_tree

DVC = str(Path(sys.executable).parent / "dvc")
pytestmark = pytest.mark.slow


def copy_repo(dest: Path) -> Path:
    """A fresh clone's worth of the working tree (no tests, no dvc.lock) with empty notes."""
    copy_tree(dest, skip=("tests/", "dvc.lock"))
    (dest / ".roam-data").mkdir()
    return dest


def repro(root: Path, *targets: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_DATASETS_OFFLINE": "1"}
    env.pop("BYTECHAT_ROOT", None)
    out = subprocess.run([DVC, "repro", *targets], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def shared_source_or_skip(path: Path, env=os.environ) -> Path:
    """path if it is there; else skip, or fail under CI=true (CI must run every test)."""
    if path.is_dir():
        return path
    message = f"{path} is absent (the shared WikiText-2 dev copy)"
    if env.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def offline_repo(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the repo after `dvc repro streams` with no network and no notes: (root, log)."""
    root = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    return root, repro(root, "streams")


def test_repro_streams_offline_then_nothing(offline_repo):
    root, log = offline_repo
    assert "OFFLINE corpus" in log and "EXAMPLE Roam graph" in log
    streams = root / "artifacts" / "streams"
    for name in ("wiki_train", "wiki_val", "wiki_test", "roam_train", "roam_val", "primer_train", "primer_val"):
        data = np.memmap(streams / f"{name}.bin", dtype=np.uint8, mode="r")
        meta = json.loads((streams / f"{name}.json").read_text())
        assert meta["bytes"] == len(data) > 0
    assert json.loads((root / "artifacts/wikitext/source.json").read_text())["kind"] == "offline"
    assert sorted(p.name for p in streams.iterdir() if p.name.startswith(".")) == [], "no pending or temp files"

    second = repro(root, "streams")
    assert "Running stage" not in second


def test_repro_switches_to_the_shared_source(offline_repo, tmp_path):
    shared = shared_source_or_skip(SHARED_WIKITEXT)
    root = tmp_path / "repo"
    shutil.copytree(offline_repo[0], root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["wikitext_source"] = str(shared)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = repro(root, "streams")
    assert "Running stage 'download'" in third and "Running stage 'streams'" in third
    assert "Running stage 'split'" not in third  # roam/primer did not change
    source = json.loads((root / "artifacts/wikitext/source.json").read_text())
    assert source["kind"] == "local-parquet" and source["requested"] == str(shared)
    streams = root / "artifacts" / "streams"
    assert "wikitext (local-parquet" in json.loads((streams / "wiki_val.json").read_text())["source"]


def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path):
    missing = tmp_path / "wikitext-2-dev"
    with pytest.raises(pytest.skip.Exception):
        shared_source_or_skip(missing, env={})
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        shared_source_or_skip(missing, env={"CI": "true"})
    missing.mkdir()
    assert shared_source_or_skip(missing, env={"CI": "true"}) == missing


def test_bad_params_fail_the_stage_with_one_line(tmp_path):
    root = copy_repo(tmp_path / "repo")
    text = (root / "params.yaml").read_text().replace("val_fraction: 0.1", "val_fraction: 2")
    (root / "params.yaml").write_text(text)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
    env.pop("BYTECHAT_ROOT", None)
    out = subprocess.run([sys.executable, "stages/split.py"], cwd=root, capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "params.yaml: data.val_fraction: must be in (0, 1)" in out.stderr
    assert not (root / "artifacts" / "splits").exists()


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run([DVC, *args], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def fake_every_output(root: Path) -> None:
    """A small stand-in for each stage output (file or folder), so `dvc commit` can record an
    up-to-date dvc.lock without running anything."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    profiles = yaml.safe_load((root / "params.yaml").read_text())["profiles"]
    for stage in stages.values():
        bodies = [_expand(stage["do"], key) for key in profiles] if "foreach" in stage else [stage]
        for body in bodies:
            for entry in [*body.get("outs", []), *body.get("metrics", []), *body.get("plots", [])]:
                path = root / (entry if isinstance(entry, str) else next(iter(entry)))
                if path.suffix in (".json", ".txt"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "stand-in.txt").write_text(path.name)


def _expand(body, key: str):
    if isinstance(body, str):
        return body.replace("${key}", key)
    if isinstance(body, list):
        return [_expand(item, key) for item in body]
    if isinstance(body, dict):
        return {_expand(k, key): _expand(v, key) for k, v in body.items()}
    return body


def test_a_model_or_optimizer_setting_reruns_only_that_profiles_train(tmp_path):
    """Every setting that shapes a model is a key of params.yaml's profile section, which
    train@<profile> depends on: changing one puts exactly train@<profile> out of date (eval
    and export follow once it writes new checkpoints), no data stage and no other profile."""
    root = copy_repo(tmp_path / "repo")
    fake_every_output(root)
    dvc(root, "commit", "-f", "-q")  # record every stage as done, without running one
    assert json.loads(dvc(root, "status", "--json")) == {}
    out_of_date = {"train@smoke": [{"changed deps": {"params.yaml": {"profiles.smoke": "modified"}}}]}

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["profiles"]["smoke"]["model"]["dropout"] == 0.0
    params["profiles"]["smoke"]["model"]["dropout"] = 0.1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(dvc(root, "status", "--json"))
    assert status == out_of_date, status

    params["profiles"]["smoke"]["model"]["dropout"] = 0.0
    params["profiles"]["smoke"]["train"]["weight_decay"] = 0.05
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(dvc(root, "status", "--json"))
    assert status == out_of_date, status


def test_stages_run_as_modules_so_they_import_the_code_beside_them(tmp_path):
    """dvc runs each stage as `python -m stages.NAME` in the workspace it runs in. An
    experiment (`dvc exp run --temp/--queue`) runs in a copy of the repo: as a module the
    stage imports that copy's bytechat, where `python stages/x.py` would import the
    editable install's (the main workspace, whatever its code is by then)."""
    cmds = [stage["cmd"] if "cmd" in stage else stage["do"]["cmd"] for stage in _dvc_stages().values()]
    assert cmds and all(cmd.startswith("python -m stages.") for cmd in cmds), cmds
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "probe.py").write_text("import bytechat\nprint(bytechat.__file__)\n")
    (tmp_path / "bytechat").mkdir()
    (tmp_path / "bytechat" / "__init__.py").write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "stages.probe"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert Path(out.strip()).resolve() == (tmp_path / "bytechat" / "__init__.py").resolve()


def test_a_sweep_is_dvc_experiments_that_leave_the_workspace_runs_alone(tmp_path):
    """`make sweep`'s two commands on a tiny profile: queue one experiment per value of a
    setting, run them all (each in a temp copy, the git-ignored notes copied in), and
    `dvc exp show` lists each with its metrics, read from the cache. The workspace's
    own artifacts/runs is never written."""
    root = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profiles"] = {"tiny": {"model": dict(TINY_MODEL), "train": dict(TINY_TRAIN)}}
    params["grounded"].update(roam_dialogues=40, synthetic_pages=10, synthetic_dialogues=20, val_dialogues=10)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "examples" / "roam", root / ".roam-data", dirs_exist_ok=True)  # "your" notes
    repro(root, "streams")  # the data stages, once: experiments take them from the cache
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    subprocess.run(["git", "commit", "-qam", "base"], cwd=root, env=env, check=True, capture_output=True)
    dvc(root, "exp", "run", "--queue", "-C", ".roam-data", "-S", "profiles.tiny.train.lr=0.001,0.004", "train@tiny")
    dvc(root, "exp", "run", "--run-all")
    shown = json.loads(dvc(root, "exp", "show", "--json"))
    runs = {}
    for exp in [exp for commit in shown for exp in commit.get("experiments") or []]:
        for run in exp["revs"]:
            data = run["data"]
            lr = data["params"]["params.yaml"]["data"]["profiles"]["tiny"]["train"]["lr"]
            metrics = data["metrics"]["artifacts/runs/tiny/live/metrics.json"]["data"]
            runs[lr] = metrics["step"]
    assert runs == {0.001: TINY_TRAIN["steps"], 0.004: TINY_TRAIN["steps"]}, shown
    assert not (root / "artifacts" / "runs").exists(), "a sweep wrote into the workspace's runs"


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


# ---------------------------------------------------------------- nothing the eval asks is trained on


def _streams(root: Path, sources=("wiki", "roam", "primer", "grounded")) -> str:
    """Every training stream the train stage reads (artifacts/streams/<source>_train.bin)."""
    return "\n".join(
        (root / "artifacts" / "streams" / f"{s}_train.bin").read_bytes().decode("utf-8", "replace") for s in sources
    )


def _held_out_pages(root: Path):
    from bytechat.notes.grounded import read_split_pages
    from bytechat.notes.roam import load_pages

    val = read_split_pages(root / "artifacts" / "splits" / "roam_val.jsonl")
    return [*val, *load_pages(REPO / "data" / "unseen-notes"), *load_pages(REPO / "data" / "new-user-notes")]


def test_no_validation_or_eval_note_is_in_any_training_stream(offline_repo):
    """The text of every block of the validation pages and of the two hand-written eval
    graphs (each line of 24 characters or more that is not tags only, raw and as the notes show it) is in no
    training stream, and no training dialogue shows one of their pages as a note."""
    from bytechat.notes.blocks import is_tags_only, page_blocks, plain

    root, _ = offline_repo
    train, dialogues = _streams(root), _streams(root, ("primer", "grounded"))
    leaks = []
    for page in _held_out_pages(root):
        raw = [line.strip().removeprefix("- ") for line in page.text.splitlines()]
        shown = [line.strip() for b in page_blocks(page) for line in b.text.splitlines()]
        lines = [line for line in dict.fromkeys(raw + shown) if len(line) >= 24 and not is_tags_only(plain(line))]
        leaks += [(page.name, line) for line in lines if line in train]
        title = page.name.rsplit("/", 1)[-1]
        leaks += [(page.name, f"[{n}] ") for n in {page.name, title} if f"[{n}] " in dialogues]
    assert not leaks, "\n".join(map(str, leaks))


def test_no_eval_question_or_template_is_in_any_training_dialogue(offline_repo, monkeypatch):
    """No question the eval asks (held-out phrasings on this run's pages, both hand-written
    sets, the everyday prompts) is a user turn of any training stream, and no held-out
    template (its slots filled with anything) is a user turn of a training dialogue."""
    from bytechat.eval import grounded as ge
    from bytechat.eval import questions as qs
    from bytechat.eval import small_talk
    from bytechat.notes.roam import load_pages
    from bytechat.eval import phrasings

    root, _ = offline_repo
    train, dialogues = _streams(root).lower(), _streams(root, ("primer", "grounded")).lower()
    monkeypatch.setenv("BYTECHAT_ROOT", str(root))
    seed = yaml.safe_load((root / "params.yaml").read_text())["seed"]
    questions = [c.question for cases in qs.heldout_sets(*qs.split_pages(), seed).values() for c in cases]
    for folder in ("unseen-notes", "new-user-notes"):
        graph = REPO / "data" / folder
        questions += [c.question for c in qs.load_questions(graph / qs.QUESTIONS_FILE, load_pages(graph))]
    questions += list(ge.EVERYDAY_PROMPTS)
    questions += [
        line for lines in small_talk.probe(REPO, untaught=True).values() for line in lines
    ]  # the eval asks them too
    assert len(questions) > 400
    trained = [q for q in questions if f"user: {q.lower()}\n" in train or (len(q) >= 20 and q.lower() in train)]
    assert not trained, trained
    templates = [t for ts in phrasings.HELDOUT_TEMPLATES.values() for t in ts]
    templates += [*phrasings.NEAR_MISS_TEMPLATES, *phrasings.UNCOVERED_TEMPLATES, *phrasings.FOLLOWUP_TEMPLATES]
    turns = [
        t
        for t in templates
        if re.search(
            "^user: " + r"[^\n]{1,80}".join(map(re.escape, re.split(r"\{\w+\}", t.lower()))) + "$", dialogues, re.M
        )
    ]
    assert not turns, turns
