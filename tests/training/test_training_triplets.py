"""Tests for training.triplets and the ``python -m training`` dispatcher.

Small hand-made GQA / COCO / JSONL files in tmp_path; the toy source end to end through the CLI in a subprocess.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF, SPATIAL_RELATIONS
from training.__main__ import COMMANDS, build_parser, main
from training.geometry import relations_from_boxes
from training.toy.scenes import DEFAULT_KINDS, ObjectKind
from training.triplets import (
    Candidate,
    SplitSizes,
    load_coco,
    load_gqa,
    load_hypernyms,
    load_jsonl,
    select_balanced,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _obj(name: str, x: float, y: float, rels: list[tuple[str, str]] = (), w: float = 10, h: float = 10) -> dict:
    return {"name": name, "x": x, "y": y, "w": w, "h": h, "relations": [{"name": r, "object": o} for r, o in rels]}


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _triplets_args(argv: list[str]):
    parser, module = build_parser("triplets")
    return module, parser.parse_args(["triplets", *argv])


def _read_items(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------------
# GQA
# ----------------------------------------------------------------------------------------------------------------


def _gqa_graphs() -> dict:
    return {
        "1": {  # kept: dog left of cat, cat right of dog; "holding" is not spatial
            "width": 100,
            "height": 80,
            "objects": {
                "a": _obj("Dog", 0, 0, [("to the left of", "b"), ("holding", "b")]),
                "b": _obj("cat", 40, 0, [("to the right of", "a")]),
            },
        },
        "2": {  # same name: tree above tree (also a repeated name)
            "objects": {"a": _obj("tree", 0, 0, [("above", "b")]), "b": _obj("tree", 0, 40)},
        },
        "3": {  # repeated name: two cars, so "person left of car" is ambiguous
            "objects": {
                "p": _obj("person", 0, 0, [("to the left of", "c1")]),
                "c1": _obj("car", 40, 0),
                "c2": _obj("car", 70, 0),
                "s": _obj("sky", 0, 60, [("above", "p")]),  # wrong on purpose; kept (sky/person: no clash)
            },
        },
        "4": {  # hypernym clash: animal and dog in one image -> both names dropped, the bench survives
            "objects": {
                "x": _obj("animal", 0, 0, [("to the left of", "y")]),
                "y": _obj("dog", 40, 0, [("below", "z")]),
                "z": _obj("bench", 40, 50, [("to the right of", "w")]),
                "w": _obj("lamp", 0, 50),
            },
        },
    }


def test_gqa_filters_by_hand(tmp_path: Path) -> None:
    path = _write(tmp_path / "scene_graphs.json", _gqa_graphs())
    counts: Counter[str] = Counter()
    cands = load_gqa(
        [path], relations=SPATIAL_RELATIONS, hypernyms=load_hypernyms(None), image_ext=".jpg", counts=counts
    )
    got = sorted((c.image_id, c.subject, c.relation, c.object) for c in cands)
    assert got == [
        ("1", "cat", RIGHT_OF, "dog"),
        ("1", "dog", LEFT_OF, "cat"),
        ("3", "sky", ABOVE, "person"),
        ("4", "bench", RIGHT_OF, "lamp"),
    ]
    assert counts == Counter(non_spatial_relation=1, same_name=1, repeated_name=1, hypernym=2)
    dog = next(c for c in cands if c.subject == "dog")
    assert dog.image == "1.jpg" and dog.subject_box == (0.0, 0.0, 10.0, 10.0) and dog.object_box == (40, 0, 50, 10)
    assert dog.image_size == (100, 80)


def test_gqa_relation_subset_and_extra_hypernyms(tmp_path: Path) -> None:
    path = _write(tmp_path / "sg.json", _gqa_graphs())
    extra = _write(tmp_path / "hyp.json", [["furniture item", "bench"], ["furniture item", "lamp"]])
    counts: Counter[str] = Counter()
    cands = load_gqa([path], relations=(LEFT_OF,), hypernyms=load_hypernyms(extra), image_ext=".png", counts=counts)
    assert sorted((c.subject, c.object) for c in cands) == [("dog", "cat")]
    assert counts["other_relation"] == 5  # right of, above x2, below, right of
    # "furniture item" is not in any image, so bench/lamp do not clash with each other.
    table = load_hypernyms(extra)
    assert table.clashes("bench", "furniture item") and not table.clashes("bench", "lamp")
    assert table.clashes("animal", "puppy")  # transitive: animal > dog > puppy
    assert not table.clashes("dog", "cat")


def test_gqa_schema_errors_name_file_and_field(tmp_path: Path) -> None:
    kwargs = dict(relations=SPATIAL_RELATIONS, hypernyms=load_hypernyms(None), image_ext=".jpg", counts=Counter())
    bad = _write(tmp_path / "bad_top.json", [1, 2])
    with pytest.raises(ValueError, match=r"bad_top\.json.*expected a JSON object"):
        load_gqa([bad], **kwargs)
    graphs = _gqa_graphs()
    del graphs["1"]["objects"]["a"]["x"]
    bad = _write(tmp_path / "no_x.json", graphs)
    with pytest.raises(ValueError, match=r"no_x\.json, image '1', object 'a', field 'x': missing"):
        load_gqa([bad], **kwargs)
    graphs = _gqa_graphs()
    graphs["1"]["objects"]["a"]["relations"][0]["object"] = "zz"
    bad = _write(tmp_path / "dangling.json", graphs)
    with pytest.raises(ValueError, match=r"dangling\.json, image '1', object 'a', relations\[0\], field 'object'"):
        load_gqa([bad], **kwargs)
    good = _write(tmp_path / "good.json", _gqa_graphs())
    with pytest.raises(ValueError, match="image id also appears"):
        load_gqa([good, good], **kwargs)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_gqa([tmp_path / "missing.json"], **kwargs)
    bad_hyp = _write(tmp_path / "hyp.json", [["animal"]])
    with pytest.raises(ValueError, match=r"hyp\.json.*entry \[0\]"):
        load_hypernyms(bad_hyp)


# ----------------------------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------------------------


def _coco() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100},
        ],
        "categories": [
            {"id": 1, "name": "cat"},
            {"id": 2, "name": "dog"},
            {"id": 3, "name": "cup"},
            {"id": 4, "name": "animal"},
            {"id": 5, "name": "kite"},
        ],  # fmt: skip
        "annotations": [
            # image 1: cat left of dog (one each); two cups (repeated); a tiny kite far below
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
            {"image_id": 1, "category_id": 2, "bbox": [60, 0, 20, 20]},
            {"image_id": 1, "category_id": 3, "bbox": [0, 50, 10, 10]},
            {"image_id": 1, "category_id": 3, "bbox": [30, 50, 10, 10]},
            {"image_id": 1, "category_id": 5, "bbox": [0, 95, 2, 2]},
            # image 2: dog above animal (hypernym clash: both dropped), a kite diagonal to the cup (ambiguous)
            {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10]},
            {"image_id": 2, "category_id": 4, "bbox": [0, 60, 10, 10]},
            {"image_id": 2, "category_id": 5, "bbox": [50, 0, 10, 10]},
            {"image_id": 2, "category_id": 3, "bbox": [80, 25, 10, 10]},
        ],
    }


def test_coco_relations_from_boxes(tmp_path: Path) -> None:
    path = _write(tmp_path / "instances.json", _coco())
    hyp = load_hypernyms(None)
    counts: Counter[str] = Counter()
    cands = load_coco(
        path, relations=SPATIAL_RELATIONS, hypernyms=hyp, min_area=0.0, threshold=0.1, allow_diagonal=False,
        seed=0, counts=counts,
    )  # fmt: skip
    facts = {(c.image_id, frozenset((c.subject, c.object))): c for c in cands}
    # dog/kite (offset (69, -86)) and, in image 2, kite/cup (offset (-30, -25)) are diagonal: two relations hold.
    assert set(facts) == {("1", frozenset({"cat", "dog"})), ("1", frozenset({"cat", "kite"}))}
    for c in cands:  # whatever order was drawn, the label is the GenEval relation of the boxes
        assert relations_from_boxes(c.subject_box, c.object_box) == {c.relation}
        assert c.image == "a.jpg" and c.image_size == (100, 100)
    cat_dog = facts[("1", frozenset({"cat", "dog"}))]
    assert cat_dog.relation == (LEFT_OF if cat_dog.subject == "cat" else RIGHT_OF)
    assert counts == Counter(repeated_name=1, hypernym=2, ambiguous_boxes=2)
    # The kite covers 4 px of 10000: --min-area 0.01 drops it.
    counts = Counter()
    cands = load_coco(
        path, relations=SPATIAL_RELATIONS, hypernyms=hyp, min_area=0.01, threshold=0.1, allow_diagonal=True,
        seed=0, counts=counts,
    )  # fmt: skip
    assert {frozenset((c.subject, c.object)) for c in cands} == {frozenset({"cat", "dog"}), frozenset({"kite", "cup"})}
    assert counts["small_box"] == 1
    # The pair order depends on the seed only (per image), not on the run.
    orders = set()
    for seed in range(12):
        cand = load_coco(
            path, relations=SPATIAL_RELATIONS, hypernyms=hyp, min_area=0.0, threshold=0.1, allow_diagonal=False,
            seed=seed, counts=Counter(),
        )[0]  # fmt: skip
        orders.add((cand.subject, cand.relation))
    assert orders == {("cat", LEFT_OF), ("dog", RIGHT_OF)}


def test_coco_schema_errors_name_file_and_field(tmp_path: Path) -> None:
    kwargs = dict(
        relations=SPATIAL_RELATIONS, hypernyms=load_hypernyms(None), min_area=0.0, threshold=0.1,
        allow_diagonal=False, seed=0, counts=Counter(),
    )  # fmt: skip
    data = _coco()
    del data["annotations"]
    with pytest.raises(ValueError, match=r"no_anns\.json', field 'annotations': expected a list"):
        load_coco(_write(tmp_path / "no_anns.json", data), **kwargs)
    data = _coco()
    data["annotations"][2]["bbox"] = [0, 0, 10]
    with pytest.raises(ValueError, match=r"bad_bbox\.json, annotations\[2\], field 'bbox'"):
        load_coco(_write(tmp_path / "bad_bbox.json", data), **kwargs)
    data = _coco()
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match=r"bad_cat\.json, annotations\[0\], field 'category_id'"):
        load_coco(_write(tmp_path / "bad_cat.json", data), **kwargs)
    data = _coco()
    del data["images"][1]["file_name"]
    with pytest.raises(ValueError, match=r"no_file\.json, images\[1\], field 'file_name'"):
        load_coco(_write(tmp_path / "no_file.json", data), **kwargs)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON"):
        load_coco(tmp_path / "broken.json", **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# JSONL
# ----------------------------------------------------------------------------------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_relations_and_boxes(tmp_path: Path) -> None:
    rows = [
        {"image": "x/1.png", "subject": "Red Square", "object": "blue circle", "relation": "left of"},
        {"image": "x/2.png", "image_id": 2, "subject": "cat", "object": "dog", "subject_box": [0, 0, 10, 10],
         "object_box": [0, 30, 10, 40], "image_size": [64, 64]},  # fmt: skip
        {"image": "x/3.png", "subject": "cat", "object": "cat", "relation": "above"},  # same name
        {"image": "x/4.png", "subject": "animal", "object": "dog", "relation": "below"},  # hypernym clash
        {"image": "x/5.png", "subject": "cat", "object": "dog", "subject_box": [0, 0, 10, 10],
         "object_box": [1, 1, 11, 11]},  # overlapping: no relation
    ]  # fmt: skip
    path = _jsonl(tmp_path / "items.jsonl", rows)
    counts: Counter[str] = Counter()
    cands = load_jsonl(
        path, relations=SPATIAL_RELATIONS, hypernyms=load_hypernyms(None), threshold=0.1, allow_diagonal=False,
        counts=counts,
    )  # fmt: skip
    assert [(c.image_id, c.subject, c.relation, c.object) for c in cands] == [
        ("x/1.png", "red square", LEFT_OF, "blue circle"),
        ("2", "cat", ABOVE, "dog"),
    ]
    assert cands[1].subject_box == (0.0, 0.0, 10.0, 10.0) and cands[1].image_size == (64, 64)
    assert counts == Counter(same_name=1, hypernym=1, no_relation=1)


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"image": "a.png", "subject": "cat", "object": "dog", "relation": "next to"},
         r"bad\.jsonl line 2, field 'relation': Unknown spatial relation 'next to'"),
        ({"image": "a.png", "object": "dog", "relation": "above"}, r"bad\.jsonl line 2, field 'subject'"),
        ({"image": "a.png", "subject": "cat", "object": "dog"}, r"bad\.jsonl line 2, field 'relation': missing"),
        ({"image": "a.png", "subject": "cat", "object": "dog", "subject_box": [0, 0, 1, 1]},
         r"bad\.jsonl line 2, field 'object_box': missing"),
        ({"image": "a.png", "subject": "cat", "object": "dog", "subject_box": [0, 0, 1], "object_box": [0, 0, 1, 1]},
         r"bad\.jsonl line 2, field 'subject_box'"),
        ({"image": "a.png", "subject": "cat", "object": "dog", "relation": "above", "image_size": [64]},
         r"bad\.jsonl line 2, field 'image_size'"),
    ],
)  # fmt: skip
def test_jsonl_errors_name_file_line_and_field(tmp_path: Path, row: dict, pattern: str) -> None:
    ok = {"image": "a.png", "subject": "cat", "object": "dog", "relation": "above"}
    path = _jsonl(tmp_path / "bad.jsonl", [ok, row])
    with pytest.raises(ValueError, match=pattern):
        load_jsonl(
            path, relations=SPATIAL_RELATIONS, hypernyms=load_hypernyms(None), threshold=0.1, allow_diagonal=False,
            counts=Counter(),
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------------------------


def _pool(n_images: int, seed: int = 0, short: str | None = None, short_n: int = 0) -> list[Candidate]:
    rng = random.Random(seed)
    cands = []
    n_short = 0
    for i in range(n_images):
        for j in range(rng.randint(1, 4)):
            rel = SPATIAL_RELATIONS[rng.randrange(4)]
            if rel == short:
                if n_short >= short_n:
                    continue
                n_short += 1
            cands.append(Candidate(image=f"{i}.jpg", image_id=str(i), subject=f"s{j}", object=f"o{j}", relation=rel))
    return cands


def _check_disjoint(items: dict[str, list[Candidate]]) -> None:
    ids = {s: {c.image_id for c in items[s]} for s in items}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_selection_fills_quotas_disjointly_and_deterministically() -> None:
    pool = _pool(400)
    sizes = SplitSizes(20, 6, 4)
    sel = select_balanced(pool, sizes, SPATIAL_RELATIONS, seed=5)
    for s, n in (("train", 20), ("val", 6), ("test", 4)):
        assert Counter(c.relation for c in sel.items[s]) == {r: n for r in SPATIAL_RELATIONS}
        assert all(v == 0 for v in sel.shortfall[s].values())
    _check_disjoint(sel.items)
    # No fact twice.
    keys = [c.key() for s in sel.items for c in sel.items[s]]
    assert len(keys) == len(set(keys))
    # Same seed, shuffled input order -> the same selection; another seed -> a different one.
    shuffled = list(pool)
    random.Random(1).shuffle(shuffled)
    again = select_balanced(shuffled, sizes, SPATIAL_RELATIONS, seed=5)
    assert again.items == sel.items
    other = select_balanced(pool, sizes, SPATIAL_RELATIONS, seed=6)
    assert other.items != sel.items


def test_selection_balances_by_trimming_when_a_relation_runs_short() -> None:
    pool = _pool(300, short=BELOW, short_n=7)  # only 7 "below" facts in the whole pool
    sizes = SplitSizes(10, 3, 2)
    sel = select_balanced(pool, sizes, SPATIAL_RELATIONS, seed=0)
    _check_disjoint(sel.items)
    for s in ("train", "val", "test"):
        counts = Counter(c.relation for c in sel.items[s])
        assert len({counts[r] for r in SPATIAL_RELATIONS}) == 1, counts  # balanced
    assert sum(Counter(c.relation for c in sel.items[s])[BELOW] for s in sel.items) == 7
    assert sum(sel.shortfall[s][BELOW] for s in sel.shortfall) == 15 - 7
    unbalanced = select_balanced(pool, sizes, SPATIAL_RELATIONS, seed=0, balanced=False)
    assert Counter(c.relation for c in unbalanced.items["train"])[ABOVE] == 10


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


def test_command_on_jsonl_checks_images_and_is_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    rows = []
    for i in range(40):
        rel = SPATIAL_RELATIONS[i % 4]
        (root / f"{i}.png").write_bytes(b"png")
        rows.append({"image": f"{i}.png", "subject": "cat", "object": "dog", "relation": rel})
    ann = _jsonl(tmp_path / "items_in.jsonl", rows)
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        module, args = _triplets_args(
            ["--source", "jsonl", "--annotations", str(ann), "--image-root", str(root), "--out", str(out),
             "--split-sizes", "5,2,1", "--seed", "4"]
        )  # fmt: skip
        assert module.run(args) == 0
        outs.append(out)
    assert (outs[0] / "items.jsonl").read_text() == (outs[1] / "items.jsonl").read_text()
    items = _read_items(outs[0])
    assert len(items) == 32 and len({it["id"] for it in items}) == 32
    assert set(items[0]) == {"id", "image", "image_id", "subject", "object", "relation", "split", "source",
                             "subject_box", "object_box", "image_size"}  # fmt: skip
    by_split = {s: {it["image_id"] for it in items if it["split"] == s} for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"] and not by_split["val"] & by_split["test"]
    mapping = json.loads((outs[0] / "mapping.json").read_text())
    assert mapping["rel_name_to_idx"] == {ABOVE: 0, BELOW: 1, LEFT_OF: 2, RIGHT_OF: 3}
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["counts"]["val"] == {r: 2 for r in sorted(SPATIAL_RELATIONS)}
    assert summary["seed"] == 4 and summary["image_root"] == str(root.resolve())

    # A missing image is an error naming the annotation file, the line and the field.
    (root / "3.png").unlink()
    module, args = _triplets_args(
        ["--source", "jsonl", "--annotations", str(ann), "--image-root", str(root), "--out", str(tmp_path / "o2"),
         "--split-sizes", "10,0,0"]
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"items_in\.jsonl.*items_in\.jsonl line 4, field 'image'.*3\.png"):
        module.run(args)
    args.no_check_images = True
    assert module.run(args) == 0
    # An existing output is not overwritten silently.
    with pytest.raises(ValueError, match="already exists"):
        module.run(args)


def test_cli_reports_errors_without_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ann = _write(tmp_path / "graphs.json", {"1": {"objects": {"a": {"name": "dog"}}}})
    rc = main(["triplets", "--source", "gqa", "--annotations", str(ann), "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "graphs.json, image '1', object 'a', field 'x': missing" in caplog.text


def test_dispatcher_reports_a_missing_command_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(COMMANDS, "phantom", ("no_such_module", "a command whose module is not written yet"))
    assert main(["phantom", "--help"]) == 2
    assert "training/no_such_module.py is missing" in capsys.readouterr().err
    # Other commands still build their parser.
    parser, module = build_parser("triplets")
    assert module is not None and parser.parse_args(["triplets", "--source", "toy", "--out", "x"]).source == "toy"


def test_toy_source_end_to_end_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    cmd = [sys.executable, "-m", "training", "triplets", "--source", "toy", "--out", str(out),
           "--split-sizes", "3,2,1", "--seed", "11", "--size", "64", "--bias", "0.5"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    items = _read_items(out)
    assert len(items) == (3 + 2 + 1) * 4
    for s, n in (("train", 3), ("val", 2), ("test", 1)):
        assert Counter(it["relation"] for it in items if it["split"] == s) == {r: n for r in SPATIAL_RELATIONS}
    ids = {s: {it["image_id"] for it in items if it["split"] == s} for s in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "toy" and summary["toy"]["bias"] == 0.5
    assert len(summary["toy"]["backgrounds"]) == 4  # the first world's tints unless --backgrounds names others
    root = Path(summary["image_root"])
    for it in items:
        assert it["source"] == "toy" and it["image_size"] == [64, 64]
        assert relations_from_boxes(it["subject_box"], it["object_box"]) == {it["relation"]}
        image = np.asarray(Image.open(root / it["image"]).convert("RGB"))  # (H, W, 3)
        for name, box in ((it["subject"], it["subject_box"]), (it["object"], it["object_box"])):
            mask = np.all(image == np.array(ObjectKind.parse(name).rgb, dtype=np.uint8), axis=-1)  # (H, W)
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
    # Deterministic: a second run with the same seed writes the same items and the same pixels.
    out2 = tmp_path / "toy2"
    proc = subprocess.run([*cmd[:7], str(out2), *cmd[8:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out2 / "items.jsonl").read_text() == (out / "items.jsonl").read_text()
    first = items[0]["image"]
    assert (out2 / first).read_bytes() == (out / first).read_bytes()
    # --backgrounds: every image's corner (never covered by both objects) is one of the given colours.
    out3 = tmp_path / "toy3"
    proc = subprocess.run([*cmd[:7], str(out3), *cmd[8:], "--backgrounds", "236,236,236;10,200,200"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out3 / "summary.json").read_text())["toy"]["backgrounds"] == [[236, 236, 236], [10, 200, 200]]
    corners = {tuple(np.asarray(Image.open(out3 / it["image"]).convert("RGB"))[y, x])
               for it in _read_items(out3) for y, x in ((0, 0), (63, 63), (0, 63), (63, 0))}
    assert corners <= {(236, 236, 236), (10, 200, 200)} | {ObjectKind.parse(k).rgb for k in DEFAULT_KINDS}
    bad = subprocess.run([*cmd[:7], str(tmp_path / "toy4"), *cmd[8:], "--backgrounds", "300,0,0"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "'300,0,0' is not an R,G,B colour" in bad.stderr
