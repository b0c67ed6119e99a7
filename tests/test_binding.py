"""The pocket attribute-binding task: closed-form rule scores, the trivial-image bound, and clean prompt splits."""
import pytest
import torch

from g2rpo.pocket import binding, data
from g2rpo.pocket.binding import COLOURS, OBJECTS, Binding, colour_fraction, compose, parse, shape_iou, silhouettes


def flat(rgb, n=1):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, 32, 32).contiguous()


def filled(obj: str, rgb) -> torch.Tensor:
    """The object's silhouette painted in one colour on white."""
    m = silhouettes()[obj]
    img = torch.ones(3, 32, 32)
    img[:, m] = torch.tensor(rgb, dtype=torch.float32)[:, None]
    return img[None]


PURE = {"red": (1, 0, 0), "orange": (1, 0.5, 0), "yellow": (1, 0.92, 0), "green": (0, 0.8, 0), "blue": (0, 0.4, 1),
        "purple": (0.67, 0, 1)}


def test_pure_colours_score_one_on_their_word_and_zero_on_the_others():
    for word, rgb in PURE.items():
        for other in COLOURS:
            got = colour_fraction(flat(rgb), [other]).item()
            assert got == (1.0 if other == word else 0.0), (word, other, got)


def test_white_grey_and_black_have_no_colour():
    for rgb in ((1, 1, 1), (0.5, 0.5, 0.5), (0.05, 0.0, 0.0)):
        assert colour_fraction(flat(rgb), ["red"]).item() == 0.0


def test_colour_counts_only_foreground_pixels():
    img = torch.ones(1, 3, 32, 32)
    img[:, :, :8] = torch.tensor([1.0, 0, 0])[:, None, None]  # a red quarter on white
    assert colour_fraction(img, ["red"]).item() == 1.0
    img[:, :, 8:16] = torch.tensor([0, 0.4, 1.0])[:, None, None]  # plus a blue quarter
    assert colour_fraction(img, ["red"]).item() == pytest.approx(0.5)


def test_the_twemoji_has_its_own_silhouette():
    by = {e.caption: e for e in data.all_emoji()}
    for obj, caption in OBJECTS.items():
        assert shape_iou(data.render(by[caption], 32)[None], [obj]).item() == 1.0


def test_binding_is_one_for_the_filled_silhouette_and_zero_for_the_wrong_colour():
    r = Binding()
    for obj in OBJECTS:
        assert r(filled(obj, PURE["purple"]), [compose("purple", obj)]).item() == 1.0
        assert r(filled(obj, PURE["purple"]), [compose("green", obj)]).item() == 0.0


def test_painting_the_canvas_scores_the_silhouette_area_and_at_most_the_silhouette_area():
    """The hack a colour reward invites (the whole canvas in the colour) gets IoU = silhouette area (<= 0.55), below
    the filled silhouette (1) and below the base model's typical blob (~0.6 IoU)."""
    r = Binding()
    for obj in OBJECTS:
        got = r(flat(PURE["red"]), [compose("red", obj)]).item()
        assert got == pytest.approx(silhouettes()[obj].float().mean().item())
        assert got <= 0.55


def test_wrong_object_scores_below_right_object():
    r = Binding()
    star = filled("star", PURE["blue"])
    assert r(star, [compose("blue", "star")]).item() > r(star, [compose("blue", "pear")]).item() + 0.3


def test_prompts_parse_and_bad_prompts_are_one_line_errors():
    assert parse("an orange lightning bolt emoji") == ("orange", "lightning bolt")
    assert parse(compose("red", "star")) == ("red", "star")
    for bad in ("a red heart emoji", "a pink star emoji", "red star", ""):
        with pytest.raises(ValueError, match="not a binding prompt") as e:
            Binding()(flat(PURE["red"]), [bad])
        assert "\n" not in str(e.value)


def test_splits_are_disjoint_and_never_seen_in_pretraining_or_reward_training():
    train, held = binding.prompts("train"), binding.prompts("heldout")
    assert len(train) == len(binding.TRAIN_OBJECTS) * len(COLOURS) and len(held) == len(binding.HELDOUT_OBJECTS) * len(COLOURS)
    assert not set(binding.TRAIN_OBJECTS) & set(binding.HELDOUT_OBJECTS)
    captions = set(data.prompts("train")) | set(data.prompts("heldout"))  # what pretraining and the heads saw
    assert not (set(train) | set(held)) & captions


def test_objects_cover_20_to_55_percent_of_the_canvas():
    for obj, m in silhouettes().items():
        assert 0.2 <= m.float().mean().item() <= 0.55, obj
