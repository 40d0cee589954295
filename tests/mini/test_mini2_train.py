"""make train-mini2 at toy scale: the world-2 recipe trains into a stock diffusers folder, and a run
stopped part-way (as a kill would stop it) and started again with the same command ends with the
same weights as one that ran straight through (and refuses to resume with other settings)."""

import json
import random

import pytest

torch = pytest.importorskip("torch")

TINY = ["--world", "2", "--seed", "5", "--threads", "1", "--device", "cpu", "--no-sheets",
        "--vae-steps", "2", "--vae-batch", "2", "--n-scenes", "12",
        "--text-steps", "2", "--text-batch", "8", "--steps", "4", "--batch", "4", "--warmup", "2",
        "--timesteps", "mid"]


def _train(out, work, *extra):
    from imagegate.mini import WEIGHTS_DIR
    from training.mini.train import main

    # as make train-mini2: stage 1 fine-tunes model 1's VAE
    main(["--out", str(out), "--work", str(work), *TINY, "--vae-init", str(WEIGHTS_DIR / "vae"), *extra])


def _weights(folder):
    from safetensors.torch import load_file

    return {f"{p.parent.name}/{k}": v for p in sorted(folder.rglob("*.safetensors")) for k, v in load_file(p).items()}


def test_world2_run_resumes_to_the_same_weights(tmp_path):
    from diffusers import StableDiffusionPipeline

    _train(tmp_path / "a", tmp_path / "wa")
    _train(tmp_path / "b", tmp_path / "wb", "--stop-after", "2")  # stopped after 2 of 4 steps
    assert json.loads((tmp_path / "wb" / "vae" / "done.json").read_text())["world"] == 2
    assert torch.load(tmp_path / "wb" / "state_b.pt", weights_only=False)["step"] == 1
    with pytest.raises(SystemExit, match="other settings"):  # a state saved with other settings is refused
        _train(tmp_path / "b", tmp_path / "wb", "--lr", "1e-4")
    _train(tmp_path / "b", tmp_path / "wb")  # the same command again: resumes at step 2
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "a"), dtype=torch.float32)
    assert pipe.tokenizer.model_max_length == 64
    img = pipe("two red stars; blue background", num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (128, 128)


def test_mid_timesteps_favour_the_noise_levels_where_shapes_are_decided():
    from training.mini.stage2 import sample_timesteps

    t = sample_timesteps("mid", 20000, torch.Generator().manual_seed(0)).float()
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    assert 550 < float(t.median()) < 700  # most steps at middle-to-high noise ...
    assert 0.03 < float((t < 200).float().mean()) < 0.1  # ... and the 20% uniform share keeps the ends
    assert 0.03 < float((t > 900).float().mean()) < 0.1
    u = sample_timesteps("uniform", 20000, torch.Generator().manual_seed(0))
    assert torch.equal(u, torch.randint(0, 1000, (20000,), generator=torch.Generator().manual_seed(0)))  # model 1


def test_uniform_from_switches_to_uniform_timesteps_at_its_step():
    from types import SimpleNamespace

    from training.mini.resume import RESUME_KEYS
    from training.mini.stage2 import timestep_dist

    args = SimpleNamespace(timesteps="mid", uniform_from=2600)
    assert [timestep_dist(args, s) for s in (0, 2599, 2600, 5000)] == ["mid", "mid", "uniform", "uniform"]
    assert timestep_dist(SimpleNamespace(timesteps="mid", uniform_from=None), 10**6) == "mid"
    assert "uniform_from" in RESUME_KEYS  # a resumed run keeps its switch


def test_world2_parse_targets_key_things_by_colour():
    from training.mini.language import Claims2, ThingClaim, edit_instruction
    from training.mini.recipe2 import AUX_GROUPS, IGNORE, N_COL, text_targets
    from training.mini.scenes import COLOUR_NAMES
    from training.mini.world2 import KIND_NAMES, Scene2, Thing

    def group(t, name):
        i = [g for g, _ in AUX_GROUPS].index(name)
        return dict(zip(COLOUR_NAMES, t[1 + i * N_COL:1 + (i + 1) * N_COL], strict=True))

    scene = Scene2("blue", [Thing("car", "red", "small", "left", 30, 64, 14),
                            Thing("car", "red", "small", "right", 98, 64, 14)])
    t = text_targets(scene, Claims2(True, False, [ThingClaim([0, 1])]))
    assert t[0] == COLOUR_NAMES.index("blue")
    assert group(t, "count")["red"] == 1 and group(t, "kind")["red"] == KIND_NAMES.index("car")
    assert group(t, "present")["green"] == 0 and group(t, "pos")["red"] == IGNORE  # a group has no one cell
    _, claims = edit_instruction(scene, random.Random(0), "add")
    t = text_targets(scene, claims)
    assert group(t, "present")["green"] == IGNORE  # an edit says nothing of what else is there


def test_pilot5_shapes_factor8_latents_and_reads_rendered_pictures_as_right():
    """Pilot 5 (training/mini/pilot_latents.py): its VAE gives 16x16 latents for the UNets it times, and
    its fidelity table reads the rendered pictures (no VAE) as all right, so a miss is the VAE's."""
    from training.mini.pilot_latents import fidelity, make_vae_f8, unet_f8
    from training.mini.world2 import sample_scene2

    vae = make_vae_f8(8)
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean
    assert z.shape == (1, 8, 16, 16)
    unet = unet_f8((32, 64, 128), 8, (True, True, False))
    with torch.no_grad():
        assert unet(z, torch.tensor([10]), encoder_hidden_states=torch.zeros(1, 4, 128)).sample.shape == z.shape
    rng = random.Random(3)
    singles = [sample_scene2(rng, 1, "plain", False) for _ in range(6)]
    multis = [sample_scene2(rng, 2, "plain", False) for _ in range(4)]
    f = fidelity(None, singles, multis)
    assert min(v for k, v in f.items() if k != "two_all_right") == 1.0 and f["two_all_right"] >= 0.75


def test_worker_batches_follow_the_step(tmp_path, monkeypatch):
    """--workers N (the GPU run): each step's batch comes from that step's own seeds, whichever process builds
    it and wherever a run resumed; a toy run trains through the spawned workers. A run stopped by a signal
    (a time limit) writes its weights, not only its state."""
    import contextlib

    from transformers import CLIPTokenizer

    import training.mini.train as train
    from training.mini.components import get_world
    from training.mini.stage2 import StepBatches

    monkeypatch.setattr(train, "stop_on_signal", lambda: contextlib.nullcontext(lambda: True))  # a SIGTERM at once
    _train(tmp_path / "a", tmp_path / "wa", "--workers", "2", "--unet-channels", "16", "32", "32", "32")
    assert torch.load(tmp_path / "wa" / "state_a.pt", weights_only=False)["step"] == 0
    assert json.loads((tmp_path / "a" / "unet" / "config.json").read_text())["block_out_channels"] == [16, 32, 32, 32]
    w = get_world(2)
    scenes = [w.sample_training_scene(random.Random(i)) for i in range(6)]
    tok = CLIPTokenizer.from_pretrained(tmp_path / "wa" / "tokenizer")
    one, two = StepBatches(scenes, tok, w, 4, 7, (4, 32, 32)), StepBatches(scenes, tok, w, 4, 7, (4, 32, 32))
    assert all(torch.equal(x, y) for x, y in zip(one[3], two[3], strict=True))
    assert not torch.equal(one[3][3], one[4][3])


def test_warm_start_reads_model_1_prompts_as_model_1_did(tmp_path):
    """--warm-from: the source's UNet whole and its text encoder by token string, so a prompt in words both
    vocabularies hold reads the same at step 0 while words only the new vocabulary has get fresh rows; a UNet of
    other widths is refused. The source is the shipped folder (model 1 when this was written, now run 22, which
    was warm-started from it): the same code path, whatever its vocabulary and number of positions."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from imagegate.mini import WEIGHTS_DIR
    from training.mini import recipe2
    from training.mini.components import make_text_encoder
    from training.mini.language import corpus2
    from training.mini.tokenizer import build_tokenizer
    from training.mini.warm import warm_start

    tok_dir = build_tokenizer(tmp_path / "tok", corpus2(3, 400), recipe2.MAX_LENGTH)
    tok2, tok1 = CLIPTokenizer.from_pretrained(tok_dir), CLIPTokenizer.from_pretrained(WEIGHTS_DIR / "tokenizer")
    old_te = CLIPTextModel.from_pretrained(WEIGHTS_DIR / "text_encoder")
    n_old = old_te.config.max_position_embeddings
    unet, te = recipe2.make_unet((32, 64, 128, 128)), make_text_encoder(tok2, recipe2.MAX_LENGTH)
    only_new = next(t for t in tok2.get_vocab() if t not in tok1.get_vocab())  # a merge only this tiny corpus made
    fresh = te.get_input_embeddings().weight[tok2.convert_tokens_to_ids(only_new)].clone()
    counts = warm_start(unet, te, WEIGHTS_DIR, tok_dir)
    assert counts["positions_copied"] == min(n_old, recipe2.MAX_LENGTH) and counts["tokens_new"] > 0
    assert counts["tokens_shared"] > 200
    old_unet = UNet2DConditionModel.from_pretrained(WEIGHTS_DIR / "unet")
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in old_unet.state_dict().items())

    prompt = "a large red star in the top left corner on a green background"
    a = tok1(prompt, padding="max_length", max_length=n_old, return_tensors="pt").input_ids
    b = tok2(prompt, padding="max_length", max_length=recipe2.MAX_LENGTH, return_tensors="pt").input_ids
    assert tok1.convert_ids_to_tokens(a[0]) == tok2.convert_ids_to_tokens(b[0, :n_old])
    with torch.no_grad():
        ha, hb = old_te(a).last_hidden_state, te(b).last_hidden_state
    assert torch.allclose(ha, hb[:, :n_old], atol=1e-5)
    # a token the source never had keeps its fresh row; "red" is the source's
    assert torch.equal(te.get_input_embeddings().weight[tok2.convert_tokens_to_ids(only_new)], fresh)
    assert torch.equal(te.get_input_embeddings().weight[tok2.convert_tokens_to_ids("red</w>")],
                       old_te.get_input_embeddings().weight[tok1.convert_tokens_to_ids("red</w>")])
    with pytest.raises(SystemExit, match="--unet-channels 32 64 128 128"):
        warm_start(recipe2.make_unet(), te, WEIGHTS_DIR, tok_dir)
    with pytest.raises(SystemExit, match="not a pipeline folder"):
        warm_start(unet, te, tmp_path, tok_dir)


def test_warm_started_run_trains_and_skips_text_pretraining(tmp_path, capsys):
    from imagegate.mini import WEIGHTS_DIR

    widths = ["--unet-channels", "32", "64", "128", "128"]
    _train(tmp_path / "w", tmp_path / "ww", "--warm-from", str(WEIGHTS_DIR), *widths)
    out = capsys.readouterr().out
    assert "warm start from" in out and "text step" not in out  # stage 2a is not run
    assert (tmp_path / "w" / "unet" / "config.json").exists()
    with pytest.raises(SystemExit):
        _train(tmp_path / "x", tmp_path / "wx", "--warm-from", str(WEIGHTS_DIR), "--init-from", str(WEIGHTS_DIR))


def test_init_from_keeps_the_token_ids_its_text_encoder_reads(tmp_path):
    """A run continued from a saved folder (--init-from) with another --seed takes that folder's tokenizer: a
    tokenizer fitted afresh on the new seed's prompts numbers the words otherwise, and the text encoder it
    continues would read other words (the first try of run 23 did)."""
    from imagegate.mini import WEIGHTS_DIR
    from training.mini.language import corpus2
    from training.mini.tokenizer import build_tokenizer

    shipped = json.loads((WEIGHTS_DIR / "tokenizer" / "vocab.json").read_text())
    fitted = json.loads((build_tokenizer(tmp_path / "fit", corpus2(5), 64) / "vocab.json").read_text())
    assert fitted != shipped  # seed 5's fit is not the shipped one: the test below can fail
    _train(tmp_path / "c", tmp_path / "wc", "--init-from", str(WEIGHTS_DIR), "--unet-channels", "32", "64", "128",
           "128")
    for folder in (tmp_path / "wc" / "tokenizer", tmp_path / "c" / "tokenizer"):
        assert json.loads((folder / "vocab.json").read_text()) == shipped


def test_the_same_command_after_a_finished_run_changes_nothing(tmp_path, capsys):
    """make train-mini runs two time-capped lines: run again after both ended, neither may train another step
    (a resumed run used to take one more step past its cap and rewrite its folder)."""
    _train(tmp_path / "t", tmp_path / "wt", "--minutes", "0.0001")  # its cap ends it after the first step
    first = _weights(tmp_path / "t")
    _train(tmp_path / "t", tmp_path / "wt", "--minutes", "0.0001")
    assert "is a finished run" in capsys.readouterr().out
    again = _weights(tmp_path / "t")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_one_share_trains_on_its_own_scenes_and_resumes_only_with_them(tmp_path):
    """--one-share (run 24) encodes its own scene set beside the world's mix, and a state written with one
    share is not continued with another."""
    _train(tmp_path / "o", tmp_path / "wo", "--one-share", "0.5", "--stop-after", "2")
    assert (tmp_path / "wo" / "latents_12_5_one0.5.pt").exists()
    assert not (tmp_path / "wo" / "latents_12_5.pt").exists()
    with pytest.raises(SystemExit, match="other settings"):
        _train(tmp_path / "o", tmp_path / "wo", "--one-share", "0.25")
    with pytest.raises(SystemExit):
        _train(tmp_path / "p", tmp_path / "wp", "--one-share", "1")


def test_hard_kinds_encode_their_own_scenes_and_refuse_bad_use(tmp_path):
    """--hard-kinds (run 29) names its kinds and weight in the latent cache, resumes only with the same
    kinds, and is refused without --one-share or with a kind model 2 does not draw."""
    _train(tmp_path / "h", tmp_path / "wh", "--one-share", "0.5", "--hard-kinds", "fish", "cup", "--stop-after", "2")
    assert (tmp_path / "wh" / "latents_12_5_one0.5_hard3-cup-fish.pt").exists()
    with pytest.raises(SystemExit, match="other settings"):
        _train(tmp_path / "h", tmp_path / "wh", "--one-share", "0.5", "--hard-kinds", "fish")
    for bad in (["--hard-kinds", "fish"], ["--one-share", "0.5", "--hard-kinds", "teapot"],
                ["--one-share", "0.5", "--hard-kinds", "fish", "--hard-weight", "0"]):
        with pytest.raises(SystemExit):
            _train(tmp_path / "x", tmp_path / "wx", *bad)
