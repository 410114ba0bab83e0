"""The training recipe's transforms (shapes, determinism under a seed, crop/flip/scale
semantics, PCA lighting), ten-crop evaluation against views cut by hand, and the data
sources: splits, folders, unreadable images."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from archdsl.backends.pytorch import data as D  # noqa: E402
from archdsl.backends.pytorch import transforms as T  # noqa: E402
from archdsl.backends.pytorch.evaluate import probabilities  # noqa: E402
from archdsl.backends.pytorch.recipe import RECIPES, Recipe, recipe  # noqa: E402


def image(c=3, h=20, w=28, seed=0):
    return torch.randint(0, 256, (c, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


STATS = T.PixelStats([0.5] * 3, [0.25] * 3, [0.04, 0.01, 0.0025], torch.eye(3).tolist())
PLAIN = T.PixelStats.identity(3)


def test_sizes_follow_the_papers_for_224_and_scale_with_the_input():
    assert T.sizes(RECIPES["alexnet"], (224, 224)) == {"scale": 256, "scale_max": 512,
                                                       "test_scale": 256}
    assert T.sizes(RECIPES["vgg"], (224, 224))["test_scale"] == 384  # Q = (256 + 512) / 2
    assert T.sizes(RECIPES["alexnet"], (32, 32))["scale"] == 37  # LeNet-5's input
    assert T.sizes(RECIPES["alexnet"], (16, 24))["scale"] == 28  # the longer side fits


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_train_transform_shape_dtype_and_determinism(name):
    t = T.train_transform(RECIPES[name], (16, 16), STATS)
    img = image()
    a, b = T.seeded(t, img, 7), T.seeded(t, img, 7)
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    outs = {T.seeded(t, img, s).sum().item() for s in range(8)}
    assert len(outs) > 1  # other seeds, other augmentations


def test_seeded_leaves_the_global_generator_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    T.seeded(T.train_transform(RECIPES["alexnet"], (8, 8), STATS), image(), 11)
    assert torch.equal(torch.rand(4), expected)


def test_sample_seeds_differ_by_seed_epoch_and_index():
    seeds = {T.sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450 and all(0 <= x < 2**63 for x in seeds)


def test_flip_gives_the_image_or_its_mirror_and_both_happen():
    # S = the crop size: the crop is the whole image; no lighting: only the flip is random
    r = Recipe(scale=1.0, lighting=0.0)
    t = T.train_transform(r, (20, 20), PLAIN)
    img = image(h=20, w=20)
    base = img.float() / 255
    kinds = set()
    for s in range(16):
        out = T.seeded(t, img, s)
        if torch.allclose(out, base):
            kinds.add("same")
        elif torch.allclose(out, base.flip(-1)):
            kinds.add("mirror")
        else:
            raise AssertionError("neither the image nor its mirror")
    assert kinds == {"same", "mirror"}


def test_random_crop_is_a_window_of_the_rescaled_image():
    r = Recipe(scale=1.5, lighting=0.0, flip=False)  # S = 12 for an 8×8 crop
    t = T.train_transform(r, (8, 8), PLAIN)
    img = image(h=12, w=12)  # already at S: the resize keeps it as it is
    base = img.float() / 255
    corners = set()
    for s in range(24):
        out = T.seeded(t, img, s)
        hits = [(i, j) for i in range(5) for j in range(5)
                if torch.allclose(out, base[:, i:i + 8, j:j + 8])]
        assert hits, "the crop is not a window of the image"
        corners.add(hits[0])
    assert len(corners) > 3


def test_multiscale_draws_the_shorter_side_from_the_range():
    r = RECIPES["vgg"]
    resize = T.train_transform(r, (28, 28), STATS).transforms[0]
    lo, hi = T.sizes(r, (28, 28))["scale"], T.sizes(r, (28, 28))["scale_max"]
    seen = {T.seeded(resize, image(h=40, w=60), s).shape[1] for s in range(40)}
    assert min(seen) >= lo and max(seen) <= hi and len(seen) > 5


def test_lighting_shifts_each_channel_by_one_amount_along_the_components():
    stats = T.pixel_stats([image(seed=s) for s in range(4)])
    light = T.Lighting(stats, 0.1)
    x = torch.rand(3, 5, 6)
    shifts = []
    for s in range(400):
        d = T.seeded(light, x, s) - x
        assert torch.allclose(d, d[:, :1, :1].expand_as(d), atol=1e-6)  # one per channel
        shifts.append(d[:, 0, 0])
    shifts = torch.stack(shifts).double()
    # along component i the shift is N(0, (σ·√λᵢ)²)
    along = shifts @ torch.tensor(stats.eigvec, dtype=torch.float64)
    expected = 0.1 * torch.tensor(stats.eigval, dtype=torch.float64).sqrt()
    assert torch.allclose(along.std(dim=0), expected, rtol=0.2)
    assert torch.equal(T.Lighting(stats, 0.0)(x), x)


def test_pixel_stats_find_the_colour_covariance():
    gen = torch.Generator().manual_seed(0)
    # pixels vary along (1, 1, 1) only: one component, the grey axis
    levels = torch.randint(0, 256, (8, 1, 16, 16), generator=gen, dtype=torch.uint8)
    stats = T.pixel_stats([lv.expand(3, -1, -1) for lv in levels])
    assert stats.eigval[1] < 1e-9 * stats.eigval[0] + 1e-12
    axis = torch.tensor(stats.eigvec)[:, 0].abs()
    assert torch.allclose(axis, torch.full((3,), 3 ** -0.5), atol=1e-6)
    grey = T.pixel_stats([levels[0]])
    assert len(grey.mean) == 1 and grey.eigvec == [[1.0]]


def test_ten_crop_evaluation_is_the_mean_of_the_ten_views_cut_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    r = Recipe(test_scale=1.5)  # S = 12 for an 8×8 crop
    img = image(h=12, w=18)
    views = T.eval_transform(r, (8, 8), STATS, views="ten-crop")(img)
    assert views.shape == (10, 3, 8, 8)
    with torch.no_grad():
        got = probabilities(model, views[None])[0]
        x = (img.float() / 255 - 0.5) / 0.25  # STATS' normalization; 12×18 is already S
        h, w = x.shape[1:]
        spots = [(0, 0), (0, w - 8), (h - 8, 0), (h - 8, w - 8), ((h - 8) // 2, (w - 8) // 2)]
        crops = [x[:, i:i + 8, j:j + 8] for i, j in spots]
        hand = torch.stack(crops + [c.flip(-1) for c in crops])
        expected = torch.softmax(model(hand), dim=1).mean(dim=0)
    assert torch.allclose(got, expected, atol=1e-6)
    centre = T.eval_transform(r, (8, 8), STATS)(img)
    assert torch.allclose(centre, crops[4], atol=1e-6)


def test_match_channels():
    grey = image(c=1)
    assert T.match_channels(grey, 3).shape[0] == 3
    assert T.match_channels(image(), 1).shape[0] == 1
    with pytest.raises(ValueError):
        T.match_channels(image(c=2), 3)


def test_recipe_checks_and_overrides():
    assert recipe("vgg", lr=0.1, epochs=None).lr == 0.1
    assert recipe("vgg", epochs=None).epochs == 74
    assert not RECIPES["modern"].check()
    problems = Recipe(optimizer="adam", lr=-1, crop="multiscale", scale_max=1.0).check()
    assert any("optimizer" in p for p in problems) and any("lr" in p for p in problems)
    assert any("scale_max" in p for p in problems)


# --- data ------------------------------------------------------------------------------------

def test_split_is_stratified_deterministic_and_disjoint():
    targets = [i % 3 for i in range(60)] + [3, 3]
    train, val = D.split(targets, 0.2, seed=5)
    assert (train, val) == D.split(targets, 0.2, seed=5)
    assert sorted(train + val) == list(range(62))
    assert [sum(targets[i] == c for i in val) for c in range(4)] == [4, 4, 4, 1]
    assert D.split(targets, 0.2, seed=6)[1] != val


def save_png(path, seed=0, size=(10, 12), mode="RGB"):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image(c=3, h=size[0], w=size[1], seed=seed).permute(1, 2, 0).numpy()
    Image.fromarray(arr).convert(mode).save(path)


def make_folder(root, classes=("cat", "dog"), per=3):
    for c in classes:
        for i in range(per):
            save_png(root / c / f"{i}.png", seed=hash((c, i)) % 1000)
    return root


def test_folder_source_reads_classes_and_images(tmp_path):
    src = D.Folder(make_folder(tmp_path / "d"), channels=3)
    assert src.classes == ["cat", "dog"] and src.targets == [0, 0, 0, 1, 1, 1]
    assert src.image(0).shape == (3, 10, 12) and src.image(0).dtype == torch.uint8
    assert D.Folder(tmp_path / "d", channels=1).image(0).shape == (1, 10, 12)


def test_missing_folder_and_empty_class_are_clear_errors(tmp_path):
    with pytest.raises(D.DataError, match="no such folder"):
        D.Folder(tmp_path / "nope", 3)
    make_folder(tmp_path / "d")
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(D.DataError, match="no valid file for the classes empty"):
        D.Folder(tmp_path / "d", 3)
    (tmp_path / "flat").mkdir()
    with pytest.raises(D.DataError, match="class folder"):
        D.Folder(tmp_path / "flat", 3)


def test_a_corrupt_image_names_its_path(tmp_path):
    root = make_folder(tmp_path / "d")
    bad = root / "dog" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    src = D.Folder(root, 3)
    i = src.paths.index(str(bad))
    with pytest.raises(D.BadImageError, match="9.png"):
        src.image(i)
    samples = D.Samples(src, list(range(len(src))), T.eval_transform(Recipe(), (8, 8), PLAIN))
    x, y, skipped = D.collate([samples[(p, 0)] for p in range(len(src))])
    assert len(y) == len(src) - 1 and [b.path for b in skipped] == [str(bad)]


def test_an_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    save_png(tmp_path / "big.png", size=(40, 50))
    monkeypatch.setattr(D, "MAX_PIXELS", 1000)
    with pytest.raises(D.BadImageError, match="50×40 pixels"):
        D.decode(str(tmp_path / "big.png"), "RGB")


def test_train_and_val_folders_must_have_the_same_classes(tmp_path):
    make_folder(tmp_path / "d" / "train")
    make_folder(tmp_path / "d" / "val", classes=("cat", "cow"))
    with pytest.raises(D.DataError, match="classes"):
        D.open_source(str(tmp_path / "d"), 3)


def test_sampler_shards_cover_the_epoch_and_skip_resumes_inside_it():
    ds = D.Samples(D.Digits(1), list(range(40)), None)
    one = D.SeededSampler(ds, 1, 0, seed=3)
    one.set_epoch(2)
    order = [p for p, _ in one]
    shards = []
    for rank in range(2):
        s = D.SeededSampler(ds, 2, rank, seed=3)
        s.set_epoch(2)
        shards.append(list(s))
    assert sorted(p for shard in shards for p, _ in shard) == sorted(order)
    assert dict(p for shard in shards for p in shard) == dict(list(one))  # same seeds
    one.skip = 10
    assert [p for p, _ in one] == order[10:] and len(one) == 30


def test_dense_evaluation_averages_the_network_over_every_window():
    import archdsl
    from archdsl.backends.pytorch.dense import densify
    # valid convolutions: a window of a larger image sees what the image alone would
    # (with padding, the borders differ — as they do in VGG's dense evaluation)
    arch = archdsl.load("arch d(classes = 5)\ninput 3x12x12\ndefaults act=relu\n"
                        "conv3-4 pad=valid\nmaxpool\nFC-6\ndropout\nFC-{classes} act=none\n")
    torch.manual_seed(0)
    model = arch.to_torch(logits=True).eval()
    dense = densify(model, arch.graph).eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(dense(x), model(x), atol=1e-5)  # its own size: the same
        big = torch.randn(1, 3, 18, 16)  # windows at every 2 pixels (the pool's stride)
        windows = [big[..., i:i + 12, j:j + 12] for i in range(0, 7, 2) for j in range(0, 5, 2)]
        expected = torch.stack([model(w) for w in windows]).mean(dim=0)
        assert torch.allclose(dense(big), expected, atol=1e-5)
    assert isinstance(model.get_submodule("3"), torch.nn.Linear)  # the original is kept


def test_dense_evaluation_refuses_a_flatten_of_a_map():
    import archdsl
    from archdsl.backends.pytorch.dense import densify
    from archdsl.errors import UsageError
    arch = archdsl.load("arch f(classes = 5)\ninput 3x8x8\nconv3-4\nflatten\nFC-{classes}\n")
    with pytest.raises(UsageError, match="flattens a 8×8 map"):
        densify(arch.to_torch(), arch.graph)


def test_dense_view_is_the_whole_image_and_its_mirror():
    t = T.eval_transform(Recipe(test_scale=1.5), (8, 8), PLAIN, views="dense")
    img = image(h=12, w=18)
    out = t(img)
    assert out.shape == (2, 3, 12, 18)
    assert torch.allclose(out[1], out[0].flip(-1))


def test_jpegs_are_decoded_no_larger_than_the_transforms_need(tmp_path):
    from PIL import Image
    arr = image(c=3, h=300, w=400).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(tmp_path / "a.jpg")
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert D.decode(str(tmp_path / "a.jpg"), "RGB").shape == (3, 300, 400)
    assert D.decode(str(tmp_path / "a.jpg"), "RGB", min_side=64).shape == (3, 75, 100)  # 1/4
    assert D.decode(str(tmp_path / "a.jpg"), "RGB", min_side=200).shape == (3, 300, 400)
    assert D.decode(str(tmp_path / "a.png"), "RGB", min_side=64).shape == (3, 300, 400)
    vgg = RECIPES["vgg"]
    assert T.decode_side(vgg, (224, 224)) == 512
    assert T.decode_side(RECIPES["modern"], (224, 224)) is None  # resized crops zoom in
