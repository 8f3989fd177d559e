"""Saving and loading networks (API.md §2 `save`/`load`, §5, §8): round
trips, exact paths, and every kind of bad file answered with
ModelFormatError — never by unpickling, never by anything else."""
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import cbp
import cbp.io

LOSS_OUTS = [("softmax_cross_entropy", 3), ("binary_cross_entropy", 1),
             ("binary_cross_entropy", 3), ("mse", 1), ("mse", 3)]


def make_net(loss="softmax_cross_entropy", out=3, dtype="float32", seed=0):
    net = cbp.Network([cbp.Dense(5, 8, activation="relu"), cbp.Dense(8, 6, activation="tanh"),
                       cbp.Dense(6, out)], loss=loss, dtype=dtype, seed=seed)
    # Non-zero biases so that every parameter is checked.
    rng = np.random.default_rng(seed + 100)
    for layer in net.layers:
        layer.b = rng.normal(size=layer.b.shape)
    return net


def X_data(n=13, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5))


def assert_same_network(a, b):
    assert isinstance(b, cbp.Network)
    assert a.get_config() == b.get_config()
    assert a.loss == b.loss and a.dtype == b.dtype
    assert [(l.in_features, l.out_features, l.activation) for l in a.layers] == \
           [(l.in_features, l.out_features, l.activation) for l in b.layers]
    pa, pb = a.parameters(), b.parameters()
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def member_bytes(path, name):
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def npy(a, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def meta_of(path):
    raw = np.load(io.BytesIO(member_bytes(path, "meta.npy")), allow_pickle=False)
    return json.loads(raw.tobytes().decode("utf-8"))


def meta_npy(meta):
    return npy(np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))


@pytest.fixture
def saved(tmp_path):
    net = make_net(dtype="float32")
    path = tmp_path / "model.npz"
    net.save(path)
    return net, path


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_round_trip(tmp_path, loss, out, dtype):
    net = make_net(loss=loss, out=out, dtype=dtype, seed=3)
    X = X_data()
    path = tmp_path / "m.npz"
    net.save(path)
    for loader in (cbp.load, cbp.Network.load, cbp.io.load):
        for p in (path, str(path)):
            clone = loader(p)
            assert_same_network(net, clone)
            assert np.array_equal(clone.forward(X), net.forward(X))
            assert np.array_equal(clone.predict(X), net.predict(X))
            if loss != "mse":
                assert np.array_equal(clone.predict_proba(X), net.predict_proba(X))
            assert len(clone.layers) == 3 and all(isinstance(l, cbp.Dense) for l in clone.layers)


def test_round_trip_after_training_and_module_save(tmp_path):
    X, y = cbp.datasets.load_digits()
    net = cbp.Network.mlp([64, 16, 10], seed=0)
    net.fit(X[:200], y[:200], epochs=2, progress=False)
    path = tmp_path / "trained.npz"
    cbp.save(net, path)
    clone = cbp.load(path)
    assert_same_network(net, clone)
    assert np.array_equal(clone.predict(X), net.predict(X))
    assert clone.evaluate(X, y) == net.evaluate(X, y)
    # The loaded network is independent and trainable.
    clone.fit(X[:200], y[:200], epochs=1, progress=False)
    assert_same_network(net, cbp.load(path))


def test_save_overwrites(tmp_path):
    path = tmp_path / "m.npz"
    a, b = make_net(seed=1), make_net(seed=2)
    a.save(path)
    b.save(path)
    assert_same_network(b, cbp.load(path))
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


@pytest.mark.parametrize("name", ["model.bin", "model", "model.npz", "weird name.ünï", ".hidden"])
def test_save_writes_exactly_the_path_given(tmp_path, name):
    net = make_net()
    path = tmp_path / name
    net.save(path)
    assert sorted(os.listdir(tmp_path)) == [name]
    assert_same_network(net, cbp.load(path))
    cbp.save(net, str(path))
    assert sorted(os.listdir(tmp_path)) == [name]


def test_save_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = make_net()
    net.save("rel.model")
    assert sorted(os.listdir(tmp_path)) == ["rel.model"]
    assert_same_network(net, cbp.load("rel.model"))


def test_saved_file_has_ordinary_permissions(tmp_path):
    """The atomic temp-file dance must not leave the model readable only by
    its owner: a new file gets the mode open() would give it (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "m.npz"
    make_net().save(path)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_save_rejects_non_network(tmp_path):
    with pytest.raises(TypeError):
        cbp.save("not a network", tmp_path / "x")
    assert os.listdir(tmp_path) == []


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        make_net().save(tmp_path / "no" / "such" / "dir" / "m.npz")


def test_file_is_a_plain_npz(saved):
    """The documented format: an .npz with the architecture as JSON and the
    parameters, readable with NumPy alone and no pickle."""
    net, path = saved
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"meta", "params"}
        params = data["params"]
    flat = np.concatenate([p.ravel() for p in net.parameters()])
    assert np.array_equal(params, flat)
    meta = meta_of(path)
    assert meta["architecture"] == net.get_config()


# ---------------------------------------------------------------- missing / damaged files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        cbp.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        cbp.Network.load(str(tmp_path / "nope.npz"))


def test_model_format_error_hierarchy():
    assert issubclass(cbp.ModelFormatError, ValueError)
    assert issubclass(cbp.ModelFormatError, cbp.CBPError)
    assert issubclass(cbp.DivergenceError, cbp.CBPError)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(path)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "junk"
    for size in (1, 4, 22, 100, 5000):
        data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        for prefix in (b"", b"PK\x03\x04", b"PK\x05\x06"):
            path.write_bytes(prefix + data)
            with pytest.raises(cbp.ModelFormatError):
                cbp.load(path)


def test_text_and_other_formats(tmp_path):
    path = tmp_path / "f"
    for content in (b"hello world\n", b"\x93NUMPY", npy(np.arange(10.0)),
                    pickle.dumps({"a": 1}), json.dumps({"format": "cbp.model"}).encode()):
        path.write_bytes(content)
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(path)


def test_truncated_files(saved, tmp_path):
    net, path = saved
    data = path.read_bytes()
    cut_path = tmp_path / "cut.npz"
    cuts = sorted({1, 2, 4, 10, 30, 31, 64, 100, 200, len(data) // 3, len(data) // 2,
                   len(data) - 200, len(data) - 100, len(data) - 23, len(data) - 22,
                   len(data) - 21, len(data) - 10, len(data) - 1})
    for cut in cuts + list(range(0, len(data), 7)):
        cut_path.write_bytes(data[:cut])
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(cut_path)


def test_bit_flips(saved, tmp_path):
    """Any single damaged byte: ModelFormatError, or (a harmless spot such as
    a timestamp) the identical model — never another error or another model."""
    net, path = saved
    data = path.read_bytes()
    bad_path = tmp_path / "flipped.npz"
    outcomes = {"error": 0, "same": 0}
    for pos in range(len(data)):
        for mask in (1 << (pos % 8), 0xFF):  # one bit (all eight over the file) and a whole byte
            flipped = bytearray(data)
            flipped[pos] ^= mask
            bad_path.write_bytes(bytes(flipped))
            try:
                clone = cbp.load(bad_path)
            except cbp.ModelFormatError:
                outcomes["error"] += 1
                continue
            assert_same_network(net, clone)
            outcomes["same"] += 1
    assert outcomes["error"] > 0.5 * 2 * len(data)


def test_trailing_garbage_and_prefix(saved, tmp_path):
    net, path = saved
    data = path.read_bytes()
    other = tmp_path / "other.npz"
    for content in (data + b"\x00" * 10, data + os.urandom(1000), data * 2,
                    b"\x00" * 100 + data):
        other.write_bytes(content)
        try:
            clone = cbp.load(other)
        except cbp.ModelFormatError:
            continue
        assert_same_network(net, clone)


# ---------------------------------------------------------------- altered content
def test_tampered_parameters_detected(saved, tmp_path):
    net, path = saved
    meta = member_bytes(path, "meta.npy")
    params = np.load(io.BytesIO(member_bytes(path, "params.npy")))
    for change in (lambda p: p.__setitem__(0, p[0] + 1),
                   lambda p: p.__setitem__(-1, -p[-1]),
                   lambda p: p.__setitem__(slice(None), 0),
                   lambda p: p.__setitem__(5, np.nextafter(p[5], np.inf))):
        altered = params.copy()
        change(altered)
        assert not np.array_equal(altered, params)
        bad = tmp_path / "tampered.npz"
        write_zip(bad, {"meta.npy": meta, "params.npy": npy(altered)})
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(bad)
    # Control: the same reconstruction with the untouched parameters loads.
    good = tmp_path / "rebuilt.npz"
    write_zip(good, {"meta.npy": meta, "params.npy": npy(params)})
    assert_same_network(net, cbp.load(good))


def _rewrite_meta(path, out, edit):
    meta = meta_of(path)
    edit(meta)
    write_zip(out, {"meta.npy": meta_npy(meta), "params.npy": member_bytes(path, "params.npy")})


@pytest.mark.parametrize("edit", [
    lambda m: m.update(version=1),
    lambda m: m.update(version=0),
    lambda m: m.update(version="2"),
    lambda m: m.update(version=None),
    lambda m: m.pop("version"),
    lambda m: m.update(format="other.model"),
    lambda m: m.pop("format"),
    lambda m: m.pop("architecture"),
    lambda m: m.pop("sha256"),
    lambda m: m.update(sha256="0" * 64),
    lambda m: m.update(n_params=m["n_params"] + 1),
    lambda m: m.update(dtype="float64"),
    lambda m: m["architecture"].update(dtype="float64"),
    lambda m: m["architecture"].update(dtype="float16"),
    lambda m: m["architecture"].update(loss="hinge"),
    lambda m: m["architecture"].update(layers=[]),
    lambda m: m["architecture"].update(layers="Dense"),
    lambda m: m["architecture"]["layers"][0].update(activation="swish"),
    lambda m: m["architecture"]["layers"][0].update(type="Conv2D"),
    lambda m: m["architecture"]["layers"][0].update(in_features=-5),
    lambda m: m["architecture"]["layers"][0].update(in_features=5.0),
    lambda m: m["architecture"]["layers"][0].update(in_features="5"),
    lambda m: m["architecture"]["layers"][0].update(in_features=True),
    lambda m: m["architecture"]["layers"][0].update(in_features=2 ** 40),
    lambda m: m["architecture"]["layers"][1].update(in_features=7),
    lambda m: m["architecture"]["layers"][2].pop("out_features"),
    lambda m: m["architecture"].update(seed=-1),
    lambda m: m["architecture"].update(seed="x"),
], ids=lambda f: "")
def test_wrong_metadata(saved, tmp_path, edit):
    net, path = saved
    bad = tmp_path / "bad.npz"
    _rewrite_meta(path, bad, edit)
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_rewritten_metadata_control(saved, tmp_path):
    net, path = saved
    good = tmp_path / "good.npz"
    _rewrite_meta(path, good, lambda m: None)
    assert_same_network(net, cbp.load(good))


def test_huge_consistent_architecture_is_not_allocated(saved, tmp_path):
    """Metadata declaring an enormous network (consistent n_params) over a
    small params member: an error, not a multi-terabyte allocation."""
    net, path = saved
    big = 2 ** 31 - 1

    def edit(m):
        m["architecture"]["layers"] = [{"type": "Dense", "in_features": big,
                                        "out_features": big, "activation": "identity"}]
        m["n_params"] = big * (big + 1)

    bad = tmp_path / "huge.npz"
    _rewrite_meta(path, bad, edit)
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


@pytest.mark.parametrize("meta_content", [
    b"not json at all",
    b"\xff\xfe\x00bad utf8",
    b"[1, 2, 3]",
    b"\"a string\"",
    b"null",
    b"{\"format\": \"cbp.model\"",
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested: RecursionError inside json
])
def test_bad_meta_bytes(saved, tmp_path, meta_content):
    net, path = saved
    bad = tmp_path / "bad.npz"
    write_zip(bad, {"meta.npy": npy(np.frombuffer(meta_content, dtype=np.uint8)),
                    "params.npy": member_bytes(path, "params.npy")})
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_meta_of_the_wrong_array_kind(saved, tmp_path):
    net, path = saved
    text = json.dumps(meta_of(path)).encode()
    params = member_bytes(path, "params.npy")
    for meta in (npy(np.frombuffer(text, dtype=np.uint8).reshape(1, -1)),
                 npy(np.frombuffer(text, dtype=np.uint8).astype(np.int64)),
                 npy(np.array(text.decode())),
                 npy(np.array(3.0)),
                 b"not an npy file"):
        bad = tmp_path / "bad.npz"
        write_zip(bad, {"meta.npy": meta, "params.npy": params})
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(bad)


def test_params_of_the_wrong_kind(saved, tmp_path):
    net, path = saved
    meta = member_bytes(path, "meta.npy")
    params = np.load(io.BytesIO(member_bytes(path, "params.npy")))
    for p in (params.astype(np.float64), params.reshape(1, -1), params[:-1],
              np.concatenate([params, params[:1]]), params.astype(">f4"),
              params.astype(np.int32), np.array([])):
        bad = tmp_path / "bad.npz"
        write_zip(bad, {"meta.npy": meta, "params.npy": npy(p)})
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(bad)
    bad = tmp_path / "bad.npz"
    write_zip(bad, {"meta.npy": meta, "params.npy": b"\x93NUMPY garbage"})
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_other_zip_members(saved, tmp_path):
    net, path = saved
    meta, params = member_bytes(path, "meta.npy"), member_bytes(path, "params.npy")
    cases = [
        {"meta.npy": meta, "params.npy": params, "extra.txt": b"hi"},
        {"meta.npy": meta},
        {"params.npy": params},
        {"readme.txt": b"hello"},
        {},
        {"dir/meta.npy": meta, "dir/params.npy": params},
        {"meta.npy": meta, "params.npy": params, "../evil.npy": params},
    ]
    for members in cases:
        bad = tmp_path / "zip.npz"
        write_zip(bad, members)
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(bad)
    # The same member twice (zipfile warns about the duplicate name).
    bad = tmp_path / "dup.npz"
    write_zip(bad, {"meta.npy": meta, "params.npy": params})
    with pytest.warns(UserWarning), zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("params.npy", npy(np.zeros(3, dtype=np.float32)))
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_plain_numpy_savez(tmp_path):
    for saver in (np.savez, np.savez_compressed):
        path = tmp_path / "data.npz"
        saver(path, X=np.zeros((3, 5)), y=np.arange(3))
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(path)
        path2 = tmp_path / "named.npz"
        saver(path2, meta=np.arange(5, dtype=np.uint8), params=np.zeros(3))
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(path2)


def test_compressed_resave_loads_or_is_refused(saved, tmp_path):
    net, path = saved
    other = tmp_path / "deflated.npz"
    write_zip(other, {"meta.npy": member_bytes(path, "meta.npy"),
                      "params.npy": member_bytes(path, "params.npy")},
              compression=zipfile.ZIP_DEFLATED)
    try:
        clone = cbp.load(other)
    except cbp.ModelFormatError:
        return
    assert_same_network(net, clone)


# ---------------------------------------------------------------- never unpickle
class _Payload:
    """Unpickling this creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_npy(marker):
    return npy(np.array([_Payload(marker), 1], dtype=object), allow_pickle=True)


def test_payload_is_live(tmp_path):
    """Control: unpickling the payload really does create the marker."""
    marker = tmp_path / "control_marker"
    arr = np.load(io.BytesIO(_evil_npy(marker)), allow_pickle=True)
    for item in arr:
        if hasattr(item, "close"):
            item.close()
    assert marker.exists()


@pytest.mark.parametrize("where", ["params", "meta", "both"])
def test_malicious_pickle_is_never_loaded(saved, tmp_path, where):
    net, path = saved
    marker = tmp_path / "PWNED"
    members = {"meta.npy": member_bytes(path, "meta.npy"),
               "params.npy": member_bytes(path, "params.npy")}
    if where in ("params", "both"):
        members["params.npy"] = _evil_npy(marker)
    if where in ("meta", "both"):
        members["meta.npy"] = _evil_npy(marker)
    bad = tmp_path / "evil.npz"
    write_zip(bad, members)
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)
    assert not marker.exists()


def test_malicious_pickle_with_matching_checksum(saved, tmp_path):
    """Even when the metadata's checksum is that of the evil member's bytes."""
    net, path = saved
    marker = tmp_path / "PWNED2"
    evil = _evil_npy(marker)
    bad = tmp_path / "evil.npz"

    def edit(m):
        import hashlib
        m["sha256"] = hashlib.sha256(evil).hexdigest()

    meta = meta_of(path)
    edit(meta)
    write_zip(bad, {"meta.npy": meta_npy(meta), "params.npy": evil})
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)
    assert not marker.exists()


# ---------------------------------------------------------------- oversized members
def test_oversized_params_member(saved, tmp_path):
    net, path = saved
    bad = tmp_path / "big.npz"
    write_zip(bad, {"meta.npy": member_bytes(path, "meta.npy"),
                    "params.npy": npy(np.zeros(2_000_000, dtype=np.float32))})
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_oversized_meta_member(saved, tmp_path):
    net, path = saved
    blob = json.dumps({"format": "cbp.model", "pad": "x" * (3 << 20)}).encode()
    bad = tmp_path / "bigmeta.npz"
    write_zip(bad, {"meta.npy": npy(np.frombuffer(blob, dtype=np.uint8)),
                    "params.npy": member_bytes(path, "params.npy")})
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def _patch_central_sizes(data, name, size):
    """Rewrite the sizes a zip's central directory declares for `name`."""
    data = bytearray(data)
    pos = 0
    found = False
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + name_len]) == name.encode():
            struct.pack_into("<II", data, pos + 20, size, size)  # compressed, uncompressed
            found = True
        pos += 4
    assert found
    return bytes(data)


@pytest.mark.parametrize("name", ["params.npy", "meta.npy"])
@pytest.mark.parametrize("size", [2 ** 31, 2 ** 32 - 1, 50_000_000])
def test_oversized_declared_member(saved, tmp_path, name, size):
    net, path = saved
    bad = tmp_path / "lying.npz"
    bad.write_bytes(_patch_central_sizes(path.read_bytes(), name, size))
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


def test_decompression_bomb(saved, tmp_path):
    """A deflated member that expands far beyond what the model needs."""
    net, path = saved
    bad = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.npy", member_bytes(path, "meta.npy"))
        zf.writestr("params.npy", npy(np.zeros(20_000_000, dtype=np.float32)))
    assert bad.stat().st_size < 1_000_000
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(bad)


# ---------------------------------------------------------------- atomic save
class Boom(Exception):
    pass


def _fail_on_call(real, fail_at):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise Boom(f"injected failure at call {fail_at}")
        return real(*args, **kwargs)

    return wrapper


FAILURES = [
    ("zipfile.ZipFile.writestr#1", zipfile.ZipFile, "writestr", 1),
    ("zipfile.ZipFile.writestr#2", zipfile.ZipFile, "writestr", 2),
    ("os.fsync", os, "fsync", 1),
    ("os.replace", os, "replace", 1),
    ("zipfile.ZipFile.close", zipfile.ZipFile, "close", 1),
    ("np.lib.format.write_array#2", np.lib.format, "write_array", 2),
]


# Failing ZipFile.close leaves an unclosed ZipFile whose __del__ retries on a
# closed file once the patch is gone; that retry is an artefact of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("label,owner,attr,fail_at", FAILURES, ids=[f[0] for f in FAILURES])
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt, OSError])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, label, owner, attr, fail_at, exc):
    old = make_net(seed=1)
    path = tmp_path / "model.npz"
    old.save(path)
    before = path.read_bytes()
    new = make_net(seed=2)
    real = getattr(owner, attr)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise exc("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, failing)
    with pytest.raises(exc):
        new.save(path)
    monkeypatch.undo()
    assert calls["n"] >= fail_at, "the failure was not reached"
    assert path.read_bytes() == before
    assert_same_network(old, cbp.load(path))
    assert sorted(os.listdir(tmp_path)) == ["model.npz"], "a temporary file was left behind"
    # And a later save works.
    new.save(path)
    assert_same_network(new, cbp.load(path))


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    net = make_net()
    monkeypatch.setattr(os, "replace", _fail_on_call(os.replace, 1))
    with pytest.raises(Boom):
        net.save(tmp_path / "model.npz")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_save_does_not_follow_into_partial_state_on_disk_full(tmp_path, monkeypatch):
    """A write error (disk full) midway through the archive."""
    old = make_net(seed=1)
    path = tmp_path / "m.npz"
    old.save(path)
    before = path.read_bytes()
    import errno

    real_write = zipfile.ZipFile.writestr

    def disk_full(self, name, data, *a, **k):
        if name == "params.npy":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(OSError):
        make_net(seed=3).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_edited_architecture_with_valid_zip_is_refused(saved, tmp_path):
    """Changing an activation in the metadata (zip checksums recomputed) is
    caught: the model checksum covers the architecture as well."""
    net, path = saved
    meta = meta_of(path)
    meta["architecture"]["layers"][0]["activation"] = (
        "tanh" if meta["architecture"]["layers"][0]["activation"] != "tanh" else "relu")
    out = tmp_path / "edited.npz"
    write_zip(out, {"meta.npy": meta_npy(meta), "params.npy": member_bytes(path, "params.npy")})
    with pytest.raises(cbp.ModelFormatError, match="checksum"):
        cbp.load(out)


# ---------------------------------------------------------------- hostile files and paths
def _npy_header(shape, descr="<f4"):
    h = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    h += b" " * (63 - (10 + len(h)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


@pytest.mark.parametrize("member,shape,descr", [
    ("params.npy", (2**40,), "<f4"),     # 4 TiB: NumPy would allocate it before reading
    ("params.npy", (2**20,), "<f4"),     # 4 MiB declared, nothing held
    ("meta.npy", (2**36,), "|u1"),
    ("params.npy", (3, 2**62), "<f8"),   # a count that overflows int64
    ("params.npy", (50,), "<f4"),        # within the limit, but not held
])
def test_npy_header_declaring_more_than_the_member_holds(saved, tmp_path, member, shape, descr):
    """The .npy header's shape is checked against the bytes the member
    holds before anything is allocated (a tiny file once made load try to
    allocate the declared 4 TiB and fail with MemoryError)."""
    _, path = saved
    members = {name: member_bytes(path, name) for name in ("meta.npy", "params.npy")}
    members[member] = _npy_header(shape, descr)
    bad = tmp_path / "bad.npz"
    write_zip(bad, members)
    with pytest.raises(cbp.ModelFormatError, match=f"member {member} declares"):
        cbp.load(bad)


def test_npy_member_of_a_non_numeric_dtype(saved, tmp_path):
    _, path = saved
    members = {name: member_bytes(path, name) for name in ("meta.npy", "params.npy")}
    members["params.npy"] = npy(np.array(["a", "b"]))
    bad = tmp_path / "bad.npz"
    write_zip(bad, members)
    with pytest.raises(cbp.ModelFormatError, match="not a plain numeric array"):
        cbp.load(bad)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                         zipfile.ZIP_LZMA])
def test_compressed_members_are_refused(saved, tmp_path, compression):
    """save writes members uncompressed; a compressed one (a decompression
    bomb whose sizes agree with its metadata, or a damaged stream raising
    zlib or LZMA errors) is refused before it is decompressed."""
    _, path = saved
    members = {name: member_bytes(path, name) for name in ("meta.npy", "params.npy")}
    packed = tmp_path / "packed.npz"
    write_zip(packed, members, compression=compression)
    with pytest.raises(cbp.ModelFormatError, match="compressed"):
        cbp.load(packed)
    data = bytearray(packed.read_bytes())
    for offset in range(30, len(data) - 30, 7):   # damaged streams: never zlib.error & co.
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        bad = tmp_path / "damaged.npz"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(cbp.ModelFormatError):
            cbp.load(bad)


def _load_in_subprocess(path, timeout=60):
    """cbp.load(path) in a fresh interpreter, so that a regression (a
    read that never ends) fails the test instead of hanging the suite."""
    import subprocess
    import sys

    code = ("import sys, cbp\n"
            "try:\n    cbp.load(sys.argv[1])\n"
            "except cbp.ModelFormatError as exc:\n    print('ModelFormatError:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_load_refuses_a_device():
    """/dev/zero once kept zipfile reading (gigabytes) forever."""
    assert "not a regular file" in _load_in_subprocess("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_load_refuses_a_fifo(tmp_path):
    """A FIFO with no writer once blocked load in open() for good."""
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    assert "not a regular file" in _load_in_subprocess(fifo)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_save_refuses_to_replace_what_is_not_a_regular_file(tmp_path):
    """save renamed its file over whatever was at the path: run as root,
    cbp.save(net, "/dev/full") replaced the device with a model file."""
    import stat

    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        make_net().save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_npy_version_2_and_3_members_load(saved, tmp_path):
    """Members numpy writes with a 2.0 or 3.0 header (a UTF-8 header; ASCII
    for these dtypes) read as the 1.0 members save writes."""
    net, path = saved
    for version in ((2, 0), (3, 0)):
        members = {}
        for name in ("meta.npy", "params.npy"):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.load(io.BytesIO(member_bytes(path, name))),
                                      version=version)
            members[name] = buf.getvalue()
        other = tmp_path / f"v{version[0]}.npz"
        write_zip(other, members)
        assert_same_network(net, cbp.load(other))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_save_keeps_an_existing_files_permissions(tmp_path, mode):
    """Replacing a private model file must not make it world-readable."""
    path = tmp_path / "m.npz"
    path.write_bytes(b"")
    os.chmod(path, mode)
    net = make_net()
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == mode
    assert_same_network(net, cbp.load(path))


@pytest.mark.parametrize("name", sorted({"", "newname/", "newname" + os.sep}))
def test_save_needs_a_file_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="expected a file name"):
        make_net().save(name)
    assert os.listdir(tmp_path) == [] and os.listdir(tmp_path.parent).count("newname") == 0


def test_save_errors_name_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    import errno

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", src)

    monkeypatch.setattr(os, "replace", refuse)
    target = tmp_path / "model.npz"
    with pytest.raises(PermissionError) as info:
        make_net().save(target)
    monkeypatch.undo()
    assert str(info.value) == f"[Errno {errno.EACCES}] Permission denied: {str(target)!r}"
    assert info.value.errno == errno.EACCES and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []


def test_save_refuses_what_load_would_refuse(tmp_path, monkeypatch):
    """A description longer than load accepts (some 13,000 layers) is
    refused by save, not written into a file that cannot be read back."""
    net = make_net()
    path = tmp_path / "m.npz"
    net.save(path)
    size = len(np.load(io.BytesIO(member_bytes(path, "meta.npy"))))
    monkeypatch.setattr(cbp.io, "_MAX_META_BYTES", size - 1)
    with pytest.raises(ValueError, match="more than the"):
        net.save(tmp_path / "other.npz")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    with pytest.raises(cbp.ModelFormatError):
        cbp.load(path)
    monkeypatch.setattr(cbp.io, "_MAX_META_BYTES", size)
    assert_same_network(net, cbp.load(path))
