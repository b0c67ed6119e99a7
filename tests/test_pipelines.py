"""FLUX.1-dev / SD3.5-medium tiers (g2rpo.models.pipelines) on tiny pipelines built in code and saved with
``save_pretrained``: the real loading code, the pipelines' own text encoding and VAE decoding, offline."""
from __future__ import annotations

import dataclasses
import shutil
import string

import pytest
import torch

from g2rpo.loop import Trainer
from g2rpo.models.pipelines import FLUX, SD35, TierError, flux_tier, sd35_tier
from g2rpo.registry import make_method
from g2rpo.tiers import load_tier
from tests.helpers import REWARDS, no_decay, shared
from tests.test_paper_rewards import clip_processor

RES = 32  # pixels; the tiny VAE downsamples by 8 as the real ones, so latents are 4 x 4
TRAIN = ["a red apple", "a blue sky", "a green tree", "a yellow sun"]
HELDOUT = ["a cat on the table", "the sun"]
WORDS = "a red apple blue sky green tree yellow sun on the table cat".split()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def perturb_zeros(model):
    """diffusers zero-initialises some projections; random values make every output depend on every input."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model


def t5():
    """A tiny T5 encoder and its tokenizer: transformers 5's T5 tokenizer is a `tokenizers` Unigram model, built here
    from a small vocabulary with the special tokens T5 needs (<pad> 0, </s> 1, <unk> 2) and single letters."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in string.ascii_lowercase]
    tok = T5TokenizerFast(vocab=vocab, extra_ids=0)
    cfg = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval(), tok


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    """CLIP's real BPE tokenizer, built from open_clip's bundled vocabulary (no download); built once, it is slow."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_processor(tmp_path_factory.mktemp("clip") / "processor"))


def clip(cls, hidden=32, projection=32):
    """A tiny CLIP text model over CLIP's full vocabulary."""
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=projection,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return cls(cfg).eval()


def vae(scaling_factor, shift_factor):
    """A tiny AutoencoderKL with 16 latent channels and 4 levels (x8 down), as FLUX's and SD3.5's VAEs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=RES, scaling_factor=scaling_factor,
                         shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory, clip_tokenizer):
    """A tiny FLUX.1-dev-shaped pipeline folder: 64 packed input channels (16 x 2 x 2), guidance embedding."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tmp = tmp_path_factory.mktemp("flux")
    torch.manual_seed(0)
    transformer = perturb_zeros(FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8)))
    text_encoder_2, tokenizer_2 = t5()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae(0.3611, 0.1159),
                        text_encoder=clip(CLIPTextModel), tokenizer=clip_tokenizer, text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.save_pretrained(tmp / "pipe")
    return tmp / "pipe"


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory, clip_tokenizer):
    """A tiny SD3.5-shaped pipeline folder: two CLIPs with projection (16 + 16 wide, pooled 32) and T5 (32 wide)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from g2rpo.models.sd3 import tiny_sd3_config

    tmp = tmp_path_factory.mktemp("sd3")
    torch.manual_seed(0)
    transformer = perturb_zeros(SD3Transformer2DModel(**tiny_sd3_config(RES // 8, channels=16, patch=2, text_dim=32)))
    te, te2 = (clip(CLIPTextModelWithProjection, hidden=16, projection=16) for _ in range(2))
    te3, tok3 = t5()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae(1.5305, 0.0609), text_encoder=te, tokenizer=clip_tokenizer,
                                    text_encoder_2=te2, tokenizer_2=clip_tokenizer, text_encoder_3=te3,
                                    tokenizer_3=tok3)
    pipe.save_pretrained(tmp / "pipe")
    return tmp / "pipe"


@pytest.fixture
def prompt_files(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(TRAIN) + "\n\n")
    (tmp_path / "eval.txt").write_text("\n".join(HELDOUT))
    return tmp_path / "train.txt", tmp_path / "eval.txt"


def build(kind, folder, prompt_files, tmp_path, **kw):
    make = flux_tier if kind is FLUX else sd35_tier
    return make(folder, *prompt_files, resolution=RES, cache_dir=tmp_path / "cache", text_dtype=torch.float32,
                reward_dir=tmp_path, **kw)


def pipeline(kind, folder):
    import diffusers

    return getattr(diffusers, kind.pipeline).from_pretrained(folder)


@pytest.mark.parametrize("kind", [FLUX, SD35], ids=["flux", "sd35"])
def test_policy_runs_and_decodes_to_images(kind, flux_dir, sd3_dir, prompt_files, tmp_path):
    folder = flux_dir if kind is FLUX else sd3_dir
    tier = build(kind, folder, prompt_files, tmp_path)
    assert tier.name == kind.name and tier.train_prompts == TRAIN and tier.eval_prompts == HELDOUT
    policy = tier.make_policy()
    assert policy.latent_shape == (16, RES // 8, RES // 8)
    if kind is FLUX:
        assert policy.guidance == 3.5 and policy.patch == 2
    else:
        assert policy.guidance_scale == 4.5 and len(policy.negative) == 1
    x = torch.randn(2, *policy.latent_shape)
    with torch.no_grad():
        v = policy(x, torch.tensor([0.9, 0.3]), tier.text(TRAIN[:2]))
        img = policy.decode(x)
    assert v.shape == x.shape and torch.isfinite(v).all() and v.abs().max() > 0
    assert img.shape == (2, 3, RES, RES) and img.min() >= 0 and img.max() <= 1 and img.std() > 0
    # the decoder is the pipeline's: latents / scaling_factor + shift_factor, vae.decode, [-1, 1] -> [0, 1]
    pipe = pipeline(kind, folder)
    cfg = pipe.vae.config
    with torch.no_grad():
        ref = pipe.image_processor.postprocess(pipe.vae.decode(x / cfg.scaling_factor + cfg.shift_factor).sample,
                                               output_type="pt")
    torch.testing.assert_close(img, ref, atol=1e-5, rtol=0)  # same math; fp32 conv order
    assert not any(p.data_ptr() == q.data_ptr() for p in policy.parameters() for q in policy.decoder.vae.parameters())


@pytest.mark.parametrize("kind", [FLUX, SD35], ids=["flux", "sd35"])
def test_text_equals_the_pipelines_encode_prompt_and_is_served_from_the_cache(kind, flux_dir, sd3_dir, prompt_files,
                                                                             tmp_path, monkeypatch):
    folder = flux_dir if kind is FLUX else sd3_dir
    tier = build(kind, folder, prompt_files, tmp_path)
    prompts = TRAIN[:3] + ["an unknown word zebra"]
    pipe = pipeline(kind, folder)
    with torch.no_grad():
        if kind is FLUX:
            tokens, pooled, _ = pipe.encode_prompt(prompts, max_sequence_length=512)
        else:
            tokens, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                                      max_sequence_length=128)
            neg, _, neg_pooled, _ = pipe.encode_prompt([""], None, None, do_classifier_free_guidance=False,
                                                       max_sequence_length=128)
    assert tokens.shape[1] == (512 if kind is FLUX else 77 + 128)
    # exact for the same batches: a matmul's last bits depend on the batch it is computed in
    assert tier.text.precompute(prompts) == 4 and tier.text.precompute([""]) == 1
    assert tier.text.encoder.pipe is None  # the encoders were dropped
    monkeypatch.setattr(type(tier.text.encoder), "load", lambda self: pytest.fail("text encoders loaded"))
    cond = tier.text(prompts)
    assert torch.equal(cond.tokens, tokens) and torch.equal(cond.pooled, pooled)
    if kind is SD35:  # the negative of every policy: the pipeline's empty-prompt embeddings, from the cache
        policy = tier.make_policy()
        assert torch.equal(policy.neg_tokens, neg) and torch.equal(policy.neg_pooled, neg_pooled)
    # a new tier over the same cache reads it back; a miss would load the encoders
    again = build(kind, folder, prompt_files, tmp_path)
    assert torch.equal(again.text(prompts[::-1]).tokens, tokens.flip(0)) and again.text.computed == 0
    with pytest.raises(pytest.fail.Exception, match="text encoders loaded"):
        again.text(["a prompt never seen"])


def test_make_policy_gives_independent_trainable_copies(flux_dir, prompt_files, tmp_path):
    tier = build(FLUX, flux_dir, prompt_files, tmp_path)
    a, b = tier.make_policy(), tier.make_policy()
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys() and all(p.requires_grad for p in pa.values())
    assert all(torch.equal(pa[k], pb[k]) and pa[k].data_ptr() != pb[k].data_ptr() for k in pa)
    with torch.no_grad():
        next(iter(pa.values())).add_(1.0)
    assert not torch.equal(next(iter(pa.values())), next(iter(pb.values())))
    assert a.decoder is b.decoder and not any(p.requires_grad for p in a.decoder.vae.parameters())
    assert not any(k.startswith("decoder") for k in a.state_dict())  # checkpoints hold the transformer only


def test_tier_settings_name_what_the_environment_chose(flux_dir, prompt_files, tmp_path):
    """Recorded beside every checkpoint (eval.evaluate refuses another setting: tests/test_evaluate.py)."""
    tier = build(FLUX, flux_dir, prompt_files, tmp_path)
    assert tier.settings["resolution"] == str(RES) and tier.settings["max_sequence_length"] == "512"
    (tmp_path / "other.txt").write_text("\n".join(HELDOUT[:-1]))
    other = build(FLUX, flux_dir, (prompt_files[0], tmp_path / "other.txt"), tmp_path)
    assert other.settings["train_prompts"] == tier.settings["train_prompts"]
    assert other.settings["eval_prompts"] != tier.settings["eval_prompts"]


# Flow-GRPO fine-tunes every weight here, so its KL reference is a frozen copy (its LoRA default: tests/test_lora.py)
KNOBS = {"g2rpo": {"eta_step_list": (0, 2), "optim": no_decay(1e-4)},
         "flowgrpo": {"beta": 0.04, "use_lora": False, "optim": no_decay(1e-4)}}


@pytest.mark.parametrize("method", ["g2rpo", "flowgrpo"])
@pytest.mark.parametrize("kind", [FLUX, SD35], ids=["flux", "sd35"])
def test_a_training_round_on_the_tier(kind, method, flux_dir, sd3_dir, prompt_files, tmp_path):
    # 16 T5 tokens instead of 512/128 keep the round fast; the text path is the same (checked above)
    tier = build(kind, flux_dir if kind is FLUX else sd3_dir, prompt_files, tmp_path, max_sequence_length=16)
    tier = dataclasses.replace(tier, rewards=REWARDS)  # weight-free rewards in place of the paper's
    m = make_method(method, KNOBS)
    sh = shared(num_steps=4, num_generations=2)
    t = Trainer(tier.make_policy(), tier.text, m, tier.rewards, sh, tier.train_prompts)
    before = [p.detach().clone() for p in t.policy.parameters()]
    metrics = t.step()
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["optimizer_steps"] > 0
    assert metrics["first_ratio_max_dev"] < 1e-5
    assert any(not torch.equal(a, b) for a, b in zip(before, t.policy.parameters()))
    if m.reference is not None:  # Flow-GRPO's frozen copy shares the VAE instead of copying it
        assert m.reference.decoder is t.policy.decoder


def test_rewards_load_on_first_use(flux_dir, prompt_files, tmp_path):
    from g2rpo.rewards.weights import RewardCheckpointError

    tier = build(FLUX, flux_dir, prompt_files, tmp_path)  # tmp_path holds no reward weights: nothing is loaded yet
    assert {"hps", "clip", "pickscore_100", "imagereward"} <= set(tier.rewards) and "hps" in tier.rewards
    with pytest.raises(RewardCheckpointError, match="HPS_v2.1_compressed.pt"):
        tier.rewards["hps"]
    with pytest.raises(TierError, match="unknown paper-tier rewards"):
        build(FLUX, flux_dir, prompt_files, tmp_path, reward_names=["hps", "aesthetic"])


def test_errors_are_one_line_and_early(flux_dir, prompt_files, tmp_path):
    def error(**kw):
        args = dict(folder=flux_dir) | kw
        with pytest.raises(TierError) as e:
            flux_tier(args.pop("folder"), *args.pop("prompts", prompt_files), cache_dir=tmp_path, **args)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "nowhere is missing: expected a diffusers FluxPipeline folder" in error(folder=tmp_path / "nowhere")
    assert "G2RPO_FLUX_DIR" in error(folder=tmp_path / "nowhere")
    shutil.copytree(flux_dir, tmp_path / "partial", ignore=shutil.ignore_patterns("transformer", "text_encoder_2"))
    assert "partial lacks transformer, text_encoder_2: expected" in error(folder=tmp_path / "partial")
    hub = error(folder="black-forest-labs/FLUX.1-dev")  # offline: the download fails, in one line
    assert "hub download failed" in hub and "black-forest-labs/FLUX.1-dev" in hub
    assert "training prompts" in error(prompts=(tmp_path / "none.txt", prompt_files[1]))
    (tmp_path / "empty.txt").write_text("\n \n")
    assert "holds no prompts" in error(prompts=(prompt_files[0], tmp_path / "empty.txt"))
    assert "multiple of 16" in error(resolution=40)
    assert "reward folder" in error(reward_dir=tmp_path / "no-rewards")


def test_tier_loaders_from_the_environment(flux_dir, sd3_dir, prompt_files, tmp_path, monkeypatch):
    for var in ("G2RPO_TRAIN_PROMPTS", "G2RPO_EVAL_PROMPTS", "G2RPO_RESOLUTION", "G2RPO_REWARD_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("G2RPO_TEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("G2RPO_FLUX_DIR", str(flux_dir))
    with pytest.raises(KeyError, match="G2RPO_TRAIN_PROMPTS and G2RPO_EVAL_PROMPTS"):
        load_tier("flux-dev")
    monkeypatch.setenv("G2RPO_TRAIN_PROMPTS", str(prompt_files[0]))
    monkeypatch.setenv("G2RPO_EVAL_PROMPTS", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="held-out prompts .*missing.txt is not a readable text file"):
        load_tier("flux-dev")
    monkeypatch.setenv("G2RPO_EVAL_PROMPTS", str(prompt_files[1]))
    monkeypatch.setenv("G2RPO_RESOLUTION", "720")  # the default; a real run's latents, 16 x 90 x 90
    assert load_tier("flux-dev").make_policy().latent_shape == (16, 90, 90)
    monkeypatch.setenv("G2RPO_RESOLUTION", str(RES))
    monkeypatch.setenv("G2RPO_REWARD_DIR", str(tmp_path))
    tier = load_tier("flux-dev")
    assert tier.name == "flux-dev" and tier.make_policy().latent_shape == (16, 4, 4)
    assert str(tier.text.folder).startswith(str(tmp_path / "cache"))
    monkeypatch.setenv("G2RPO_SD35_DIR", str(tmp_path / "no-sd35"))
    with pytest.raises(KeyError, match="no-sd35 is missing: expected a diffusers StableDiffusion3Pipeline folder"):
        load_tier("sd35")
    monkeypatch.setenv("G2RPO_SD35_DIR", str(sd3_dir))
    assert load_tier("sd35").name == "sd35"
    monkeypatch.setenv("G2RPO_RESOLUTION", "big")
    with pytest.raises(ValueError, match="G2RPO_RESOLUTION='big' is not an integer"):
        load_tier("sd35")
