"""The pocket scenes task: perfect renders pass, each perturbation fails its own atom, GenEval's position rule in
closed form, and a held-out split that pretraining never sees."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from g2rpo.pocket import scenes, verifier
from g2rpo.pocket.scenes import COLOURS, SHAPES, SKILLS, SIZE, Obj, SceneError, caption, parse, render
from g2rpo.pocket.verifier import SIDE_RANGE, SceneVerifier, atoms, detect, verify

SPECS = scenes.all_specs()
BY_SKILL = {k: [caption(s) for s in SPECS if s.skill == k] for k in SKILLS}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The verifier's tensors are 48 x 48: one thread is fastest, and two oversubscribe a busy machine ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tensor(img: np.ndarray) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of an (H, W, 3) uint8 render, as the verifier takes images."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


def read(objs: list[Obj], prompt: str) -> dict[str, float]:
    """The atoms the verifier reads off a render of these objects."""
    return atoms(parse(prompt), detect(tensor(render(objs))))


def ones_but(a: dict[str, float], expected: dict[str, float]) -> None:
    """Every atom is 1 except those in ``expected``, which have exactly the expected value."""
    assert set(expected) <= set(a), (a, expected)
    assert a == {k: expected.get(k, 1.0) for k in a}, (a, expected)


def cell(o: Obj) -> int:
    return int(o.cx // (SIZE / scenes.GRID)) + scenes.GRID * int(o.cy // (SIZE / scenes.GRID))


def at_cell(shape: str, colour: str, k: int, size: int = 12) -> Obj:
    """An object centred on grid cell k with its box corner on a whole pixel, as the renderer places them."""
    c = SIZE / scenes.GRID
    x0, y0 = round((k % scenes.GRID + 0.5) * c - size / 2), round((k // scenes.GRID + 0.5) * c - size / 2)
    return Obj(shape, colour, x0 + size / 2, y0 + size / 2, size)


def unnamed(prompt: str) -> str:
    named = {c.shape for c in parse(prompt).clauses}
    return next(s for s in SHAPES if s not in named)


# --- prompts and the renderer ----------------------------------------------------------------------------------

def test_every_prompt_has_a_distinct_caption_that_parses_back():
    assert len(SPECS) == 5 + 20 + 15 + 30 + 80 + 600
    assert len({caption(s) for s in SPECS}) == len(SPECS)
    for s in SPECS:
        assert parse(caption(s)) == s


def test_a_perfect_render_of_every_prompt_passes():
    """Known answer: the renderer's ground truth holds every atom, so strict = partial = 1 (seeds 0 and 1)."""
    for s in SPECS:
        p = caption(s)
        for seed in (0, 1):
            img, _ = scenes.scene_for(p, seed)
            assert verify(tensor(img), p) == (1.0, 1.0), (p, seed, atoms(s, detect(tensor(img))))


@pytest.mark.parametrize("bad", ["a photo of a pentagon", "a photo of a pink circle", "a photo of five circles",
                                 "a photo of one circle", "a photo of a circle left of a circle", "a red star emoji", ""])
def test_prompts_outside_the_task_are_one_line_errors(bad):
    with pytest.raises(SceneError, match="not a scenes prompt") as e:
        parse(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("seed", [1.5, "3", True, None, np.float64(2.0)])
def test_a_renderer_seed_must_be_an_integer(seed):
    with pytest.raises(SceneError, match="integer"):
        scenes.scene_for("a photo of a circle", seed)


def test_renders_are_deterministic_from_prompt_and_seed():
    for k in SKILLS:
        p = BY_SKILL[k][0]
        imgs = [scenes.scene_for(p, s)[0] for s in range(5)]
        assert scenes.scene_for(p, 3)[0].tobytes() == imgs[3].tobytes()
        assert scenes.scene_for(p, np.int64(3))[0].tobytes() == imgs[3].tobytes()  # numpy integers are integers
        assert len({i.tobytes() for i in imgs}) == 5, p  # different seeds, different scenes
        assert imgs[0].shape == (SIZE, SIZE, 3) and imgs[0].dtype == np.uint8


# --- perturbations fail the right atom ------------------------------------------------------------------------

def test_recolouring_the_named_object_fails_only_its_colour_atom():
    for p in BY_SKILL["colors"] + BY_SKILL["color_attr"][::5]:
        objs = scenes.scene_for(p, 0)[1]
        other = next(c for c in COLOURS if c != objs[0].colour)
        got = read([replace(objs[0], colour=other), *objs[1:]], p)
        ones_but(got, {f"colour:{objs[0].shape}": 0.0})


def test_swapping_the_two_objects_fails_only_the_position_atom():
    """The two objects trade places (each keeps the other's box): the relation reads reversed."""
    for p in BY_SKILL["position"]:
        a, b = scenes.scene_for(p, 0)[1]
        swapped = [replace(a, shape=b.shape, colour=b.colour), replace(b, shape=a.shape, colour=a.colour)]
        ones_but(read(swapped, p), {"position": 0.0})


def test_deleting_one_of_n_objects_scores_the_count_atom_one_minus_one_over_n():
    for p in BY_SKILL["counting"]:
        for seed in (0, 1):
            objs = scenes.scene_for(p, seed)[1]
            n, shape = len(objs), objs[0].shape
            ones_but(read(objs[:-1], p), {f"count:{shape}": 1 - 1 / n})
            strict, partial = verify(tensor(render(objs[:-1])), p)
            assert strict == 0.0 and partial == pytest.approx((2 - 1 / n) / 2)


def test_an_extra_object_of_an_unnamed_shape_fails_only_the_clean_atom():
    for k in SKILLS:
        for p in BY_SKILL[k][::3]:
            objs = scenes.scene_for(p, 1)[1]
            free = min(set(range(scenes.GRID ** 2)) - {cell(o) for o in objs})
            ones_but(read([*objs, at_cell(unnamed(p), "red", free)], p), {"clean": 0.0})


def test_replacing_a_shape_by_an_unnamed_one_fails_its_count_and_the_clean_canvas():
    for p in BY_SKILL["single_object"] + BY_SKILL["two_object"] + BY_SKILL["counting"]:
        objs = scenes.scene_for(p, 0)[1]
        n = sum(o.shape == objs[0].shape for o in objs)
        ones_but(read([replace(objs[0], shape=unnamed(p)), *objs[1:]], p), {f"count:{objs[0].shape}": 1 - 1 / n, "clean": 0.0})


@pytest.mark.parametrize("colour", list(COLOURS))
def test_painting_the_canvas_scores_zero_on_every_atom(colour):
    """The fill-the-canvas hack: whatever the prompt, partial and strict are 0 and the reward gives nothing."""
    img = tensor(np.full((SIZE, SIZE, 3), COLOURS[colour], np.uint8))
    for k in SKILLS:
        p = BY_SKILL[k][0]
        assert atoms(parse(p), detect(img)) == {"canvas": 0.0}
        assert verify(img, p) == (0.0, 0.0)
        for mode in ("partial", "strict"):
            assert SceneVerifier(mode)(img[None], [p]).item() == 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_an_object_beyond_the_side_range_is_malformed(shape):
    """At the largest accepted side the object counts; two pixels larger it is a malformed blob and fails."""
    p = caption(scenes.Spec("single_object", (scenes.Clause(shape),)))
    for side, ok in ((SIDE_RANGE[1], True), (SIDE_RANGE[1] + 2, False)):
        img = tensor(render([Obj(shape, "blue", 12 + side / 2, 12 + side / 2, side)]))
        d = detect(img)
        assert len(d.objects) == 1 and (d.objects[0].shape is None) != ok, (side, d.objects)
        assert verify(img, p)[0] == float(ok)
        if not ok:
            assert atoms(parse(p), d) == {f"count:{shape}": 0.0, "clean": 0.0}


def drawn(shape: str, w: int, h: int, colour: str = "red") -> torch.Tensor:
    """The shape stretched to a w x h box, drawn as the renderer draws (4x supersampled, box-filtered)."""
    big = Image.new("RGB", (SIZE * scenes.SS, SIZE * scenes.SS), scenes.BACKGROUND)
    ss = scenes.SS
    scenes._draw(ImageDraw.Draw(big), shape, 10 * ss, 10 * ss, w * ss - 1, h * ss - 1, COLOURS[colour])
    return tensor(np.asarray(big.resize((SIZE, SIZE), Image.Resampling.BOX)))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_shape_stretched_to_aspect_two_is_malformed(shape):
    p = caption(scenes.Spec("single_object", (scenes.Clause(shape),)))
    assert verify(drawn(shape, 12, 12), p) == (1.0, 1.0)  # the same drawing at aspect 1 passes
    for w, h in ((16, 8), (8, 16)):
        d = detect(drawn(shape, w, h))
        assert [o.shape for o in d.objects] == [None], (w, h, d.objects)
        assert atoms(parse(p), d) == {f"count:{shape}": 0.0, "clean": 0.0}


# --- GenEval's position rule ----------------------------------------------------------------------------------

def test_relations_of_side_by_side_stacked_and_coincident_boxes():
    a, right, below = (0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30)
    assert scenes.relations(a, right) == {"left of"} and scenes.relations(right, a) == {"right of"}
    assert scenes.relations(a, below) == {"above"} and scenes.relations(below, a) == {"below"}
    assert scenes.relations(a, a) == set()
    assert scenes.relations(a, (20, 20, 30, 30)) == {"left of", "above"}  # diagonal: (20 - 2) / (20 * sqrt 2) > 0.5


def test_the_shrink_makes_a_small_offset_no_relation():
    """Along one axis the offset d shrinks by 0.1 x (sum of sides) = 2 for two 10 px boxes and is then divided by
    d: a relation needs (d - 2) / d > 0.5, i.e. d > 4 = 2 x POSITION_THRESHOLD x 20."""
    assert scenes.POSITION_THRESHOLD == 0.1
    box = lambda x, y: (x, y, x + 10, y + 10)  # noqa: E731
    for d, want in ((1.5, set()), (2.0, set()), (3.9, set()), (4.1, {"right of"}), (10, {"right of"})):
        assert scenes.relations(box(d, 0), box(0, 0)) == want, d
        assert scenes.relations(box(0, d), box(0, 0)) == {r.replace("right of", "below") for r in want}, d
    assert scenes.relations(box(0, 0), box(0, 0), threshold=0.0) == set()


def test_ground_truth_positions_hold_the_asked_relation_and_only_it():
    for p in BY_SKILL["position"]:
        rel = parse(p).relation
        for seed in range(3):
            img, (a, b) = scenes.scene_for(p, seed)
            assert scenes.relations(scenes.box(a), scenes.box(b)) == {rel}, (p, seed)
            found = {o.shape: o.box for o in detect(tensor(img)).valid()}
            assert rel in scenes.relations(found[a.shape], found[b.shape]), (p, seed)


# --- the held-out split ---------------------------------------------------------------------------------------

def test_the_committed_split_is_replayable():
    assert json.loads(scenes.SPLIT_FILE.read_text()) == json.loads(json.dumps(scenes.make_split()))


def test_train_and_heldout_prompts_are_disjoint_task_prompts():
    train, held, indist = (scenes.prompts(k) for k in scenes.SPLITS)
    assert not set(train) & set(held) and set(indist) <= set(train)
    atoms_ = scenes.split()["atoms"]
    assert all(scenes._is_heldout(parse(p), atoms_) for p in held)
    assert not any(scenes._is_heldout(parse(p), atoms_) for p in train)
    with pytest.raises(SceneError):
        scenes.prompts("test")


def test_no_pretraining_caption_names_a_heldout_atom():
    sp = scenes.split()
    assert sp["pretrain"] and not any(scenes._is_heldout(parse(c), sp["atoms"]) for c in sp["pretrain"])
    assert not set(sp["pretrain"]) & set(sp["heldout"])


def test_every_skill_but_single_object_has_heldout_prompts():
    assert {scenes.skill_of(p) for p in scenes.prompts("heldout")} == set(SKILLS) - {"single_object"}


def test_pretraining_renders_never_draw_a_heldout_colour_shape_pair():
    """Over 300 draws of pretraining captions no object has a held-out (colour, shape); the same draws without the
    ban do show some, so the check has power."""
    banned, caps = scenes.heldout_colour_shapes(), scenes.split()["pretrain"]
    seen = {True: set(), False: set()}
    for i in range(300):
        p = caps[(7 * i) % len(caps)]
        for pre in (True, False):
            seen[pre] |= {(o.colour, o.shape) for o in scenes.scene_for(p, i, pretraining=pre)[1]}
    assert not seen[True] & banned
    assert seen[False] & banned


# --- the reward -----------------------------------------------------------------------------------------------

def test_scene_verifier_is_bounded_and_batched_equals_one_by_one():
    """Ground truths with their own prompt and with the next skill's prompt: strict is 0 or 1 (both occur),
    partial in [0, 1], and a batch scores as its images one by one and as ``verify``."""
    prompts = [BY_SKILL[k][3] for k in SKILLS]
    imgs = torch.stack([tensor(scenes.scene_for(p, 2)[0]) for p in prompts] * 2)
    asked = prompts + prompts[1:] + prompts[:1]
    for i, mode in enumerate(("strict", "partial")):
        r = SceneVerifier(mode)
        got = r(imgs, asked)
        assert torch.equal(got, torch.cat([r(x[None], [p]) for x, p in zip(imgs, asked)]))
        assert got.tolist() == pytest.approx([verify(x, p)[i] for x, p in zip(imgs, asked)])
        assert ((got >= 0) & (got <= 1)).all()
        if mode == "strict":
            assert set(got.tolist()) == {0.0, 1.0}
    assert (SceneVerifier("partial").name, SceneVerifier("strict").name) == ("scenes", "scenes_strict")
    with pytest.raises(ValueError, match="mode"):
        SceneVerifier("scenes")


def test_a_prompt_outside_the_task_fails_before_any_image_is_read(monkeypatch):
    calls = []
    monkeypatch.setattr(verifier, "detect", lambda img: calls.append(1) or verifier.Detection())
    imgs = torch.ones(2, 3, SIZE, SIZE)
    with pytest.raises(SceneError, match="not a scenes prompt"):
        SceneVerifier("partial")(imgs, ["a photo of a circle", "a photo of a pentagon"])
    assert calls == []
