"""Tests of the demo launcher :mod:`devtools.launcher` (``scripts/run_toy_world.py``, what ``scripts/demo.sh`` runs).

Without ComfyUI: which install route and which Python the environment variables choose, the errors for a
``COMFYUI_PATH`` without ``main.py``, a bogus ``COMFYUI_GIT_URL`` and a bogus ``COMFYUI_PYTHON``, the git route on a
small local repository (clone once, then reuse), the pack link in the base directory (never replacing what is there),
the requirements split, the comfy-cli command, workflow loading and the parsing of ``/history`` outputs.

With ComfyUI (``comfyui`` marker, ``COMFYUI_PATH`` + ``COMFYUI_PYTHON``): the launcher runs a graph of stock nodes
against the checkout and prints PNGs that exist, stops its server, and reports a rejected workflow with ComfyUI's
own error text; ``bash scripts/demo.sh`` runs the default toy-world workflow.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import comfyui_python

from devtools.comfy_server import ComfyServerError, free_port, output_files, port_is_free
from devtools.launcher.base_dir import PACK_LINK_NAME, link_pack, prepare_base_dir, server_arguments
from devtools.launcher.cli import main
from devtools.launcher.errors import LauncherError
from devtools.launcher.install import clone_comfyui, comfy_cli_install_command, ensure_comfyui
from devtools.launcher.plan import ROUTE_COMFY_CLI, ROUTE_GIT, ROUTE_PATH, resolve_plan
from devtools.launcher.requirements import requirement_name, split_requirements, stamp_is_current, write_stamp
from devtools.launcher.server_log import missing_module, pack_import_errors
from devtools.launcher.toy_demo import (
    DEFAULT_TOY_SEEDS,
    GRID_NAME,
    demo_pair,
    demo_report_command,
    run_demo_report,
    toy_demo_prompt,
    toy_demo_world,
)
from devtools.launcher.workflow import DEFAULT_WORKFLOW, image_paths, load_workflow, with_seed

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "run_toy_world.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two 64x48 images from stock nodes only: runs in any ComfyUI without model files.
STOCK_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 0xFF0000}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "l2s_launcher_test"}},
}

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _checkout(folder: Path, venv: str | None = None) -> Path:
    """A folder that looks like a ComfyUI checkout (``main.py``), optionally with ``<venv>/bin/python``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text("# stand-in\n")
    if venv is not None:
        python = folder / venv / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.symlink_to(sys.executable)
    return folder


def _git_repo(folder: Path, files: dict[str, str]) -> Path:
    """A one-commit git repository holding ``files``."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "init.defaultBranch=m"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return folder


# ------------------------------------------------------------------------------------ route and Python choice


def test_no_variables_choose_comfy_cli_in_the_repo_workspace(tmp_path: Path) -> None:
    plan = resolve_plan({}, repo_root=tmp_path)
    assert plan.route == ROUTE_COMFY_CLI
    assert plan.workspace == tmp_path / ".comfyui"
    assert plan.comfy_path == tmp_path / ".comfyui" / "ComfyUI"
    assert plan.venv == tmp_path / ".comfyui" / "venv"
    assert plan.base_dir == tmp_path / ".comfyui" / "base"
    assert plan.python is None and plan.git_source is None


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    env = {"COMFYUI_PATH": "  ", "COMFYUI_GIT_URL": "", "COMFYUI_PYTHON": "", "COMFYUI_WORKSPACE": ""}
    plan = resolve_plan(env, repo_root=tmp_path)
    assert plan.route == ROUTE_COMFY_CLI and plan.workspace == tmp_path / ".comfyui"


def test_git_url_is_cloned_into_the_workspace(tmp_path: Path) -> None:
    url = "https://example.invalid/ComfyUI.git"
    env = {"COMFYUI_GIT_URL": url, "COMFYUI_WORKSPACE": str(tmp_path / "ws")}
    plan = resolve_plan(env, repo_root=tmp_path)
    assert plan.route == ROUTE_GIT
    assert plan.git_source == url
    assert plan.comfy_path == (tmp_path / "ws").resolve() / "ComfyUI"
    assert plan.python is None


def test_local_git_source_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mirror").mkdir()
    monkeypatch.chdir(tmp_path)
    plan = resolve_plan({"COMFYUI_GIT_URL": "mirror"}, repo_root=tmp_path)
    assert plan.git_source == str((tmp_path / "mirror").resolve())


def test_comfyui_path_wins_and_its_venv_is_used(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "ComfyUI", venv=".venv")
    env = {"COMFYUI_PATH": str(checkout), "COMFYUI_GIT_URL": "https://example.invalid/x.git"}
    plan = resolve_plan(env, repo_root=tmp_path)
    assert plan.route == ROUTE_PATH
    assert plan.comfy_path == checkout.resolve()
    assert plan.python == str(checkout.resolve() / ".venv" / "bin" / "python")
    assert "checkout's venv" in plan.python_origin


def test_comfyui_path_without_a_venv_uses_the_workspace_venv(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "ComfyUI")
    plan = resolve_plan({"COMFYUI_PATH": str(checkout)}, repo_root=tmp_path)
    assert plan.route == ROUTE_PATH and plan.python is None


def test_comfyui_python_overrides_every_other_choice(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "ComfyUI", venv="venv")
    for env in (
        {"COMFYUI_PATH": str(checkout)},
        {"COMFYUI_GIT_URL": "https://example.invalid/x.git"},
        {},
    ):
        plan = resolve_plan({**env, "COMFYUI_PYTHON": sys.executable}, repo_root=tmp_path)
        assert plan.python == shutil.which(sys.executable)
        assert plan.python_origin == f"COMFYUI_PYTHON={sys.executable}"


def test_comfyui_path_without_main_py_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for value in (str(tmp_path / "empty"), str(tmp_path / "missing")):
        with pytest.raises(LauncherError) as info:
            resolve_plan({"COMFYUI_PATH": value}, repo_root=tmp_path)
        message = str(info.value)
        assert f"COMFYUI_PATH={value} holds no main.py" in message
        assert "unset it" in message


def test_bogus_comfyui_python_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match=r"COMFYUI_PYTHON=.*nope.* is not an executable Python"):
        resolve_plan({"COMFYUI_PYTHON": str(tmp_path / "nope")}, repo_root=tmp_path)


# ------------------------------------------------------------------------------------------------ git route


@needs_git
def test_clone_of_a_bogus_local_path_names_the_variable_and_the_way_out(tmp_path: Path) -> None:
    env = {"COMFYUI_GIT_URL": str(tmp_path / "no-such-mirror"), "COMFYUI_WORKSPACE": str(tmp_path / "ws")}
    plan = resolve_plan(env, repo_root=tmp_path)
    with pytest.raises(LauncherError) as info:
        ensure_comfyui(plan)
    message = str(info.value)
    assert f"git clone of COMFYUI_GIT_URL={tmp_path / 'no-such-mirror'}" in message
    assert "COMFYUI_PATH" in message and "failed (exit 128)" in message
    assert not plan.comfy_path.exists()  # git removed its half-made target; nothing else was created there
    assert "no-such-mirror" in plan.install_log.read_text()


@needs_git
def test_git_route_clones_once_then_reuses_the_clone(tmp_path: Path) -> None:
    source = _git_repo(tmp_path / "src", {"main.py": "# ComfyUI stand-in\n", "requirements.txt": "torch\n"})
    env = {"COMFYUI_GIT_URL": str(source), "COMFYUI_WORKSPACE": str(tmp_path / "ws"), "COMFYUI_PYTHON": sys.executable}
    plan = resolve_plan(env, repo_root=tmp_path)
    checkout, python = ensure_comfyui(plan)
    assert checkout == plan.comfy_path and (checkout / "main.py").is_file()
    assert python == plan.python  # COMFYUI_PYTHON: nothing installed, no venv made
    assert not plan.venv.exists()
    (checkout / "local-change.txt").write_text("kept")
    assert ensure_comfyui(plan) == (checkout, python)
    assert (checkout / "local-change.txt").read_text() == "kept"


@needs_git
def test_clone_of_a_repository_without_main_py_is_refused(tmp_path: Path) -> None:
    source = _git_repo(tmp_path / "src", {"README.md": "not ComfyUI\n"})
    with pytest.raises(LauncherError, match="holds no main.py: COMFYUI_GIT_URL must name the ComfyUI"):
        clone_comfyui(str(source), tmp_path / "ws" / "ComfyUI", tmp_path / "install.log")


def test_a_foreign_folder_in_the_clone_target_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "ws" / "ComfyUI"
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("user data")
    with pytest.raises(LauncherError, match="exists but holds no main.py"):
        clone_comfyui("https://example.invalid/x.git", target, tmp_path / "install.log")
    assert (target / "mine.txt").read_text() == "user data"


# ----------------------------------------------------------------------------------- requirements, comfy-cli


def test_requirements_are_split_into_torch_family_and_the_rest() -> None:
    text = (
        "comfyui-frontend-package==1.27.10\ntorch\ntorchsde\nTorchVision>=0.1 # comment\ntorchaudio\n"
        "numpy>=1.25.0\n\n#non essential dependencies:\nkornia>=0.7.1\n-e ./local\n"
    )
    rest, family = split_requirements(text)
    assert rest == ["comfyui-frontend-package==1.27.10", "torchsde", "numpy>=1.25.0", "kornia>=0.7.1"]
    assert family == {"torch": "torch", "torchvision": "TorchVision>=0.1", "torchaudio": "torchaudio"}
    assert requirement_name("Pydantic_Settings~=2.0") == "pydantic-settings"
    assert requirement_name("# comment") is None


def test_comfy_cli_command_installs_cpu_without_manager(tmp_path: Path) -> None:
    target = tmp_path / "ComfyUI"
    fresh = comfy_cli_install_command("comfy", target, restore=False, python_given=False)
    assert fresh == ["comfy", "--skip-prompt", "--workspace", str(target), "install", "--cpu", "--skip-manager"]
    again = comfy_cli_install_command("comfy", target, restore=True, python_given=True)
    assert again[len(fresh) :] == ["--restore", "--skip-torch-or-directml", "--skip-requirement"]


def test_requirements_stamp_follows_the_requirements_file(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "ComfyUI")
    (checkout / "requirements.txt").write_text("numpy\n")
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    assert not stamp_is_current(venv, checkout)
    write_stamp(venv, checkout)
    assert stamp_is_current(venv, checkout)
    (checkout / "requirements.txt").write_text("numpy\nscipy\n")
    assert not stamp_is_current(venv, checkout)


# ------------------------------------------------------------------------------------------- base directory


def test_base_dir_links_the_pack_once_and_registers_the_checkout_models(tmp_path: Path) -> None:
    repo, checkout = tmp_path / "repo", _checkout(tmp_path / "ComfyUI")
    repo.mkdir()
    base = prepare_base_dir(tmp_path / "base", checkout, repo_root=repo)
    link = base / "custom_nodes" / PACK_LINK_NAME
    assert link.is_symlink() and link.resolve() == repo.resolve()
    for sub in ("input", "output", "user", "models"):
        assert (base / sub).is_dir()
    prepare_base_dir(tmp_path / "base", checkout, repo_root=repo)  # idempotent
    yaml_text = (base / "extra_model_paths.yaml").read_text()
    assert f"base_path: {json.dumps(str(checkout))}" in yaml_text
    assert "    models/checkpoints\n" in yaml_text and "  l2s_classifiers: |\n" in yaml_text
    args = server_arguments(base)
    assert args[args.index("--base-directory") + 1] == str(base)
    assert f"sqlite:///{base / 'user' / 'comfyui.db'}" in args and "--cpu" in args


def test_another_pack_of_the_same_name_stops_the_run_and_stays(tmp_path: Path) -> None:
    repo, other = tmp_path / "repo", tmp_path / "other"
    repo.mkdir()
    other.mkdir()
    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_LINK_NAME).symlink_to(other)
    with pytest.raises(LauncherError, match="another copy of the pack"):
        link_pack(custom_nodes, repo_root=repo)
    assert (custom_nodes / PACK_LINK_NAME).resolve() == other.resolve()
    (custom_nodes / PACK_LINK_NAME).unlink()
    (custom_nodes / PACK_LINK_NAME).mkdir()
    (custom_nodes / PACK_LINK_NAME / "nodes.py").write_text("user's pack")
    with pytest.raises(LauncherError, match="already holds a different pack"):
        link_pack(custom_nodes, repo_root=repo)
    assert (custom_nodes / PACK_LINK_NAME / "nodes.py").read_text() == "user's pack"


# ------------------------------------------------------------------------------------------ workflow, history


def test_api_workflows_load_and_other_files_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.api.json"
    good.write_text(json.dumps(STOCK_WORKFLOW))
    assert load_workflow(good) == STOCK_WORKFLOW
    for example in sorted((REPO_ROOT / "example_workflows" / "api").glob("*.api.json")):
        assert load_workflow(example)
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(LauncherError, match="UI format.*Export \\(API\\)"):
        load_workflow(ui)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(LauncherError, match="is not valid JSON"):
        load_workflow(broken)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(LauncherError, match="node '1' is not an API-format node"):
        load_workflow(odd)
    with pytest.raises(LauncherError, match="does not exist"):
        load_workflow(tmp_path / "missing.json")


def test_history_outputs_give_the_saved_images_only(tmp_path: Path) -> None:
    entry = {
        "outputs": {
            "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
            "10": {"images": [{"filename": "p_00001_.png", "subfolder": "", "type": "temp"}]},
            "11": {
                "images": [
                    {"filename": "b_00001_.png", "subfolder": "l2s", "type": "output"},
                    {"filename": "c_00001_.png", "subfolder": "l2s"},
                ],
                "text": ["not an image"],
            },
            "12": {"latents": [{"filename": "x.latent", "subfolder": "latents", "type": "output"}]},
        }
    }
    saved, previews = image_paths(entry, tmp_path)
    out = (tmp_path / "output").resolve()
    assert saved == [out / "a_00001_.png", out / "l2s" / "b_00001_.png", out / "l2s" / "c_00001_.png"]
    assert previews == 1
    assert image_paths({"outputs": {}}, tmp_path) == ([], 0)
    odd = {"outputs": {"1": {"images": [{"filename": "x.png", "type": "elsewhere"}]}}}
    assert image_paths(odd, tmp_path) == ([], 1)
    with pytest.raises(ComfyServerError, match="unknown folder 'elsewhere'"):
        output_files(odd, {"output": tmp_path}, "images")


def test_seeds_are_set_on_every_seed_input_of_a_copy() -> None:
    graph = {"1": {"class_type": "KSampler", "inputs": {"seed": 6, "steps": 20}},
             "2": {"class_type": "SamplerCustom", "inputs": {"noise_seed": 9}},
             "3": {"class_type": "Other", "inputs": {"seed": ["1", 0]}}}  # a link, not a number: left alone
    copy, count = with_seed(graph, 3)
    assert count == 2 and copy["1"]["inputs"]["seed"] == 3 and copy["2"]["inputs"]["noise_seed"] == 3
    assert copy["3"]["inputs"]["seed"] == ["1", 0] and graph["1"]["inputs"]["seed"] == 6


def test_the_toy_demo_graph_is_recognised_and_its_pairs_told_apart(tmp_path: Path) -> None:
    demo = load_workflow(DEFAULT_WORKFLOW)
    text = toy_demo_prompt(demo)
    assert text is not None and " a " in text
    assert toy_demo_prompt(STOCK_WORKFLOW) is None
    plain, steered = tmp_path / "l2s_toy_unsteered_00003_.png", tmp_path / "l2s_toy_steered_00003_.png"
    assert demo_pair([tmp_path / "l2s_toy_world_00003_.png", steered, plain]) == (plain, steered)
    assert demo_pair([plain]) is None
    command = demo_report_command("py", text, [(0, plain, steered)], tmp_path / "g.png")
    assert command[:3] == ["py", "-m", "training.toy.demo"] and command[-4:] == ["--pair", "0", str(plain), str(steered)]
    world = toy_demo_world(demo)  # the shipped bundle: the report judges with its colours and backgrounds
    assert world == REPO_ROOT / "toy_world" / "models" / "toy_world.safetensors" and toy_demo_world(STOCK_WORKFLOW) is None
    command = demo_report_command("py", text, [(0, plain, steered)], tmp_path / "g.png", world)
    assert command[command.index("--world") + 1] == str(world)


def test_demo_report_runs_as_the_launcher_calls_it(tmp_path: Path) -> None:
    import random

    from training.toy.scenes import PAPER, ToyWorldConfig, render_scene

    config = ToyWorldConfig(size=128, min_object_frac=0.3, max_object_frac=0.45, backgrounds=(PAPER,))
    plain, steered = tmp_path / "p.png", tmp_path / "s.png"
    render_scene("blue circle", "red square", "below", random.Random(0), config).image.save(plain)
    render_scene("blue circle", "red square", "above", random.Random(0), config).image.save(steered)
    out = tmp_path / "grid.png"
    printed = run_demo_report(sys.executable, "a blue circle above a red square", [(0, plain, steered)], out,
                              REPO_ROOT / "toy_world" / "models" / "toy_world.safetensors")
    assert printed.splitlines()[0] == "seed 0: plain: below - wrong; steered: above - right"
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(LauncherError, match="Not a toy relation prompt"):
        run_demo_report(sys.executable, "a blue circle near a red square", [(0, plain, steered)], out)


def test_log_scans_find_the_fatal_module_and_pack_import_failures() -> None:
    log = (
        "ModuleNotFoundError: No module named 'torchaudio'\n"
        "Traceback (most recent call last):\nModuleNotFoundError: No module named 'aiohttp'\n"
        "ModuleNotFoundError: No module named 'torchaudio.functional'\n"
    )
    assert missing_module(log) == "aiohttp"
    assert missing_module("ModuleNotFoundError: No module named 'torchaudio'\n") is None
    failed = "Traceback\nImportError: boom\nCannot import /base/custom_nodes/learn_to_steer module for custom nodes: x"
    assert pack_import_errors(failed)[-1].startswith("Cannot import /base/custom_nodes/learn_to_steer")
    assert pack_import_errors("IMPORT FAILED: nodes_audio.py") == []


def test_main_reports_a_bad_comfyui_path_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    workflow = tmp_path / "w.api.json"
    workflow.write_text(json.dumps(STOCK_WORKFLOW))
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert main(["--workflow", str(workflow)]) == 1
    err = capsys.readouterr().err
    assert f"error: COMFYUI_PATH={tmp_path} holds no main.py" in err


# ------------------------------------------------------------------------------------------ real ComfyUI runs


def _run_launcher(command: list[str], workspace: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["COMFYUI_WORKSPACE"] = str(workspace)
    env["COMFYUI_PYTHON"] = comfyui_python()  # as the harness: never let a test install ComfyUI's requirements
    env.setdefault("L2S_COMFY_THREADS", "1")
    env.pop("COMFYUI_GIT_URL", None)
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _printed_images(stdout: str) -> list[Path]:
    return [Path(line) for line in stdout.splitlines() if line.startswith("/") and line.endswith(".png")]


@pytest.mark.comfyui
def test_launcher_runs_a_stock_workflow_against_comfyui_path(tmp_path: Path) -> None:
    workflow = tmp_path / "stock.api.json"
    workflow.write_text(json.dumps(STOCK_WORKFLOW))
    port = free_port()
    result = _run_launcher(
        [sys.executable, str(SCRIPT), "--workflow", str(workflow), "--port", str(port)], tmp_path / "ws"
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    images = _printed_images(result.stdout)
    assert len(images) == 2, result.stdout
    for image in images:
        assert image.is_absolute() and image.parent == (tmp_path / "ws" / "base" / "output").resolve()
        assert image.read_bytes()[:8] == PNG_MAGIC
    assert "Wall time" in result.stdout
    with pytest.raises(ConnectionRefusedError):  # the server is gone with the launcher
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert port_is_free(port)
    link = tmp_path / "ws" / "base" / "custom_nodes" / PACK_LINK_NAME
    assert link.resolve() == REPO_ROOT.resolve()
    assert "learn_to_steer" in (tmp_path / "ws" / "comfyui.log").read_text()


@pytest.mark.comfyui
def test_launcher_reports_comfyui_validation_errors(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.api.json"
    workflow.write_text(json.dumps({**STOCK_WORKFLOW, "3": {"class_type": "L2S_NoSuchNode", "inputs": {}}}))
    result = _run_launcher([sys.executable, str(SCRIPT), "--workflow", str(workflow)], tmp_path / "ws")
    assert result.returncode == 1
    assert "ComfyUI rejected the prompt (HTTP 400)" in result.stderr
    assert "L2S_NoSuchNode" in result.stderr
    assert f"ComfyUI log: {tmp_path / 'ws' / 'comfyui.log'}" in result.stderr
    assert _printed_images(result.stdout) == []


def _toy_stand_ins(base: Path, cache_dir: Path) -> None:
    """Until the pack ships toy_world/, put stand-ins of the same names where the launcher's ComfyUI looks."""
    from toy_world_files import (
        SHIPPED_BUNDLE,
        SHIPPED_CLASSIFIER,
        TOY_WORLD_FOLDER_KEY,
        attention_channels,
        build_tiny_bundle,
        write_random_classifier,
    )

    bundle = SHIPPED_BUNDLE
    if not SHIPPED_BUNDLE.is_file():
        folder = base / "models" / TOY_WORLD_FOLDER_KEY
        folder.mkdir(parents=True, exist_ok=True)
        bundle = folder / SHIPPED_BUNDLE.name
        shutil.copyfile(build_tiny_bundle(cache_dir), bundle)
    if not SHIPPED_CLASSIFIER.is_file():
        folder = base / "models" / "l2s_classifiers"
        folder.mkdir(parents=True, exist_ok=True)
        write_random_classifier(folder, SHIPPED_CLASSIFIER.name, attention_channels(bundle))


@pytest.mark.comfyui
@pytest.mark.skipif(
    not DEFAULT_WORKFLOW.is_file(), reason="the toy-world workflow is not in this checkout yet"
)
def test_demo_sh_runs_the_default_toy_world(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The README's first command, as it is: bash scripts/demo.sh (shipped toy world, or stand-ins until then)."""
    _toy_stand_ins(tmp_path / "ws" / "base", request.config.cache.mkdir("l2s_toy_world"))
    result = _run_launcher(["bash", str(REPO_ROOT / "scripts" / "demo.sh")], tmp_path / "ws", timeout=1200)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    images = _printed_images(result.stdout)
    assert any(image.name.startswith("l2s_toy_world_") for image in images), result.stdout
    for image in images:
        assert image.read_bytes()[:8] == PNG_MAGIC
    readings = [line for line in result.stdout.splitlines() if line.startswith("seed ")]
    assert [line.split(":")[0] for line in readings] == [f"seed {i}" for i in range(DEFAULT_TOY_SEEDS)]
    assert all("plain: " in line and "; steered: " in line for line in readings), readings
    grid = tmp_path / "ws" / "base" / "output" / GRID_NAME
    assert f"grid: {grid.resolve()}" in result.stdout and grid.read_bytes()[:8] == PNG_MAGIC
