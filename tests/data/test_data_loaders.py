"""CUB, COCO and folder loaders; per-branch images; caption sampling; batching."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from data_fakes import CUB_CAPTIONS, make_cub_tree, py2_pickle, write_image
from PIL import Image

from attngan_fast.data.captions import load_captions_pickle
from attngan_fast.data.dataset import (
    CaptionedImageDataset,
    CaptionList,
    collate,
    prepare_batch,
    sort_by_caption_length,
)
from attngan_fast.data.folder import load_folder_dataset, split_names
from attngan_fast.data.images import BranchImages, branch_sizes, crop_to_bbox, resize_shorter_side
from attngan_fast.data.synth_birds import load_synth_attributes
from attngan_fast.data.text_image import load_text_image_dataset
from attngan_fast.data.vocab import Vocabulary, tokenize
from attngan_fast.runtime.loaders import make_loader
from attngan_fast.runtime.sampler import ResumableSampler


def test_cub_loader_reads_synth_birds(synth_root):
    ds = load_text_image_dataset(synth_root, "train", "cub")
    assert (synth_root / "captions.pickle").is_file()  # built on first use
    assert len(ds) == 24 and ds.words_num == 18 and ds.captions_per_image == 10
    attrs = load_synth_attributes(synth_root)
    for i in range(4):
        s = ds[i]
        assert [tuple(t.shape) for t in s.images] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]
        for t in s.images:
            assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
            assert t.min() < -0.5 and t.max() > 0.5  # contrast survives: not a constant image
        assert s.caption.dtype == torch.int64 and s.caption.shape == (18,)
        assert 1 <= s.cap_len <= 18
        assert (s.caption[: s.cap_len] > 0).all() and (s.caption[s.cap_len :] == 0).all()
        assert s.class_id == attrs[s.key]["class_id"]
        words = ds.vocab.decode(s.caption.tolist()).split()
        lines = (synth_root / "text" / f"{s.key}.txt").read_text().splitlines()
        full = [tokenize(line) for line in lines]
        assert any(_is_subsequence(words, f) for f in full)  # one of the image's own captions
    test = load_text_image_dataset(synth_root, "test", "cub")
    assert len(test) == 8 and test.vocab.ixtoword == ds.vocab.ixtoword


def _is_subsequence(short, long):
    it = iter(long)
    return all(w in it for w in short)


def test_long_caption_keeps_an_ordered_random_subset(tmp_path):
    image = write_image(tmp_path / "a.png", (80, 60))
    words = list(range(1, 31))
    vocab = Vocabulary({0: "<end>", **{i: f"w{i}" for i in words}})
    ds = CaptionedImageDataset(
        image_paths=[image],
        keys=["a"],
        captions=[words, [5, 6]],
        captions_per_image=2,
        vocab=vocab,
        class_ids=[0],
        words_num=18,
        images=BranchImages(16, 2),
        source="test",
    )
    subsets = set()
    for _ in range(20):
        cap, n = ds.caption(0, 0)
        kept = cap.tolist()
        assert n == 18 and len(set(kept)) == 18 and kept == sorted(kept) and set(kept) <= set(words)
        subsets.add(tuple(kept))
    assert len(subsets) > 1  # random
    cap, n = ds.caption(0, 1)
    assert n == 2 and cap.tolist() == [5, 6] + [0] * 16
    assert [tuple(t.shape) for t in ds[0].images] == [(3, 16, 16), (3, 32, 32)]


def test_crop_resize_and_branch_sizes():
    img = Image.new("RGB", (500, 375))
    # box x=100, y=50, w=200, h=100: r = 150, centre (200, 100) → (50, 0, 350, 250) after clamp
    assert crop_to_bbox(img, (100, 50, 200, 100)).size == (300, 250)
    assert resize_shorter_side(Image.new("RGB", (300, 250)), 304).size == (364, 304)
    assert resize_shorter_side(Image.new("RGB", (250, 300)), 304).size == (304, 364)
    assert branch_sizes(64, 3) == [64, 128, 256] and branch_sizes(299, 1) == [299]
    assert BranchImages(64, 3).load_size == 304 and BranchImages(299, 1).load_size == 355
    out = BranchImages(299, 1, augment=False)(img, (100, 50, 200, 100))
    assert [tuple(t.shape) for t in out] == [(3, 299, 299)]


def test_augment_off_is_deterministic_and_on_flips(tmp_path):
    path = tmp_path / "half.png"
    img = Image.new("RGB", (300, 300), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 150, 300))  # left half black
    img.save(path)
    fixed = BranchImages(32, 2, augment=False)
    a, b = fixed(Image.open(path).convert("RGB")), fixed(Image.open(path).convert("RGB"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    left_means = {
        round(float(BranchImages(32, 2)(Image.open(path).convert("RGB"))[1][:, :, :8].mean()), 1)
        for _ in range(30)
    }
    assert left_means == {-1.0, 1.0}  # left edge black, or white when flipped
    no_flip = {
        round(
            float(
                BranchImages(32, 2, flip=False)(Image.open(path).convert("RGB"))[1][:, :, :8].mean()
            ),
            1,
        )
        for _ in range(30)
    }
    assert no_flip == {-1.0}  # random crops, never mirrored


def test_augmentation_choices_reach_the_training_data(synth_root, monkeypatch):
    """GanTrainOptions.augment -> the loader's (random crop, mirror)."""
    from attngan_fast.config import preset
    from attngan_fast.runtime import loaders
    from attngan_fast.train import gan_trainer

    assert gan_trainer.AUGMENTATIONS == {
        "full": (True, True), "crop": (True, False), "none": (False, False)
    }  # fmt: skip
    for augment, flip in gan_trainer.AUGMENTATIONS.values():
        images = loaders.load_dataset(
            synth_root, preset("birds"), "train", augment=augment, flip=flip
        ).images
        assert (images.augment, images.flip) == (augment, flip)
    seen = []

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        seen.append(kwargs)
        raise Loaded

    monkeypatch.setattr(gan_trainer, "load_dataset", load)
    opts = gan_trainer.GanTrainOptions(out_dir="unused", data_dir=synth_root, augment="crop")
    with pytest.raises(Loaded):
        gan_trainer.train_gan(preset("birds"), opts)
    assert seen == [{"augment": True, "flip": False}]


def test_collate_and_sort_keep_the_permutation(synth_root):
    ds = load_text_image_dataset(synth_root, "train", "cub", words_num=12)
    samples = [ds[i] for i in range(6)]
    batch = collate(samples)
    assert [tuple(t.shape) for t in batch.images] == [(6, 3, s, s) for s in (64, 128, 256)]
    assert batch.captions.shape == (6, 12) and batch.cap_lens.shape == (6,)
    assert batch.order.tolist() == list(range(6))
    ready = prepare_batch(batch, "cpu")
    assert ready.cap_lens.tolist() == sorted(batch.cap_lens.tolist(), reverse=True)
    for row, src in enumerate(ready.order.tolist()):
        assert ready.keys[row] == samples[src].key
        assert torch.equal(ready.captions[row], samples[src].caption)
        assert torch.equal(ready.images[2][row], samples[src].images[2])
        assert ready.class_ids[row] == samples[src].class_id
    again = sort_by_caption_length(ready)
    assert again.order.tolist() == ready.order.tolist()
    assert collate(samples, sort=True).keys == ready.keys
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=0)
    first = next(iter(loader))
    assert first.captions.shape == (4, 12)


def _coco_tree(root, train, test, texts=None):
    for key in train + test:
        write_image(root / "images" / f"{key}.jpg", (64, 48))
        caps = texts or [f"a man riding a horse number {j}" for j in range(6)]
        (root / "text").mkdir(parents=True, exist_ok=True)
        (root / "text" / f"{key}.txt").write_text("\n".join(caps) + "\n")
    for split, keys in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys, protocol=2))
    return root


def test_coco_layout_on_a_tiny_tree(tmp_path):
    root = _coco_tree(
        tmp_path / "coco",
        ["COCO_train2014_000000000009", "COCO_train2014_000000000025"],
        ["COCO_val2014_000000000042"],
    )
    ds = load_text_image_dataset(root, "train", "coco")
    assert len(ds) == 2 and ds.captions_per_image == 5 and ds.words_num == 12
    assert ds.class_ids == [0, 1]  # no class info: every image its own class
    assert len(load_captions_pickle(root / "captions.pickle").train) == 10  # the first 5 each
    s = ds[1]
    assert s.key == "COCO_train2014_000000000025"
    assert [tuple(t.shape) for t in s.images] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]
    assert ds.bboxes is None
    test = load_text_image_dataset(root, "test", "coco", base_size=32, branch_num=2)
    assert [tuple(t.shape) for t in test[0].images] == [(3, 32, 32), (3, 64, 64)]


def test_cub_reads_python2_pickles(tmp_path):
    root = make_cub_tree(tmp_path / "birds", ["001.A/a_1", "002.B/b_2"], ["003.C/c_3"], py2=True)
    ixtoword = {0: b"<end>"}
    words = sorted({w for c in CUB_CAPTIONS for w in c.split()})
    ixtoword.update({i: w.encode() for i, w in enumerate(words, 1)})
    wordtoix = {w: i for i, w in ixtoword.items()}
    enc = [[wordtoix[w.encode()] for w in c.split()] for c in CUB_CAPTIONS]
    (root / "captions.pickle").write_bytes(py2_pickle([enc * 2, enc, ixtoword, wordtoix]))
    ds = load_text_image_dataset(root, "train", "cub")
    assert ds.keys == ["001.A/a_1", "002.B/b_2"] and ds.class_ids == [1, 2]
    assert ds.vocab.decode(ds.caption(1, 3)[0].tolist()) == CUB_CAPTIONS[3]
    assert ds.bboxes == [(5, 4, 20, 16), (5, 4, 20, 16)]


def test_folder_split_and_vocabulary_cache(tmp_path):
    root = tmp_path / "mine"
    for i in range(10):
        ext = ".png" if i % 2 else ".jpg"
        write_image(root / "images" / f"img{i:02d}{ext}", (50, 40))
        caps = [f"picture {i} of a red bird"] + (["a blue bird on a branch"] if i < 5 else [])
        (root / "images" / f"img{i:02d}.txt").write_text("\n".join(caps) + "\n")
    names = [f"img{i:02d}" for i in range(10)]
    split = split_names(names, 0.3, 0)
    assert split == split_names(list(reversed(names)), 0.3, 0)  # deterministic
    assert len(split["test"]) == 3 and sorted(split["train"] + split["test"]) == names
    assert split_names(names, 0.3, 1) != split

    train = load_folder_dataset(root, "train", test_ratio=0.3)
    test = load_folder_dataset(root, "test", test_ratio=0.3)
    assert train.keys == split["train"] and test.keys == split["test"]
    assert train.captions_per_image == 2  # the most any image has; the others repeat theirs
    for i, key in enumerate(train.keys):
        first, second = train.caption(i, 0)[0], train.caption(i, 1)[0]
        assert torch.equal(first, second) == (int(key[3:]) >= 5)
    cache = root / "captions.pickle"
    stamp = cache.stat().st_mtime_ns
    assert pickle.loads(cache.read_bytes())[2][0] == "<end>"
    os.utime(cache, ns=(stamp - 10**9, stamp - 10**9))
    load_folder_dataset(root, "train", test_ratio=0.3)
    assert cache.stat().st_mtime_ns == stamp - 10**9  # read from the cache
    with pytest.warns(RuntimeWarning, match="changed since captions.pickle"):
        changed = load_folder_dataset(root, "train", test_ratio=0.5)
    assert len(changed) == 5
    s = changed[0]
    assert [tuple(t.shape) for t in s.images] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]


def test_dataloader_workers_draw_differently_and_reproducibly(synth_root):
    """The training loader (``runtime.loaders.make_loader``) with 2 workers: each sample draws
    one of its 10 captions at random. The workers draw differently (each has its own seed: with
    one seed, worker 1's batches would repeat worker 0's draws), the same loader built again
    draws the same whatever torch's global generator holds, and another epoch draws anew."""
    # words_num 100: no caption is cut, so each drawn caption matches one of the item's exactly
    ds = load_text_image_dataset(
        synth_root, "train", "cub", base_size=16, branch_num=1, words_num=100
    )

    def drawn(epoch, global_seed):
        """Per batch, which caption (0..9) each sample got."""
        torch.manual_seed(global_seed)
        sampler = ResumableSampler(len(ds), seed=7)
        sampler.set_epoch(epoch)
        batches = []
        for batch in make_loader(ds, sampler, batch_size=4, workers=2):
            which = []
            for key, caption, n in zip(batch.keys, batch.captions, batch.cap_lens):
                i = ds.keys.index(key)
                words = caption[:n].tolist()
                which.append([j for j in range(10) if ds.captions[i * 10 + j] == words])
            batches.append(which)
        return batches

    first = drawn(epoch=0, global_seed=1)
    assert len(first) == 6 and all(len(w) == 1 for b in first for w in b)  # unambiguous
    assert first == drawn(epoch=0, global_seed=2)  # reproducible, global RNG ignored
    assert first != drawn(epoch=1, global_seed=1)
    # batches alternate between the two workers: pairs (0, 1), (2, 3), (4, 5) differ
    assert all(first[k] != first[k + 1] for k in (0, 2, 4))


def test_caption_list_behaves_like_a_list():
    caps = [[3, 1, 2], [5], [7, 8]]
    view = CaptionList(caps)
    assert len(view) == 3 and list(view) == caps and view[-1] == [7, 8] and view[0:2] == caps[:2]
    assert torch.equal(view.tensor(1), torch.tensor([5]))
    with pytest.raises(IndexError):
        view[3]
