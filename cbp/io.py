"""Saving and loading networks.

A model file is an uncompressed ``.npz`` (a zip archive) holding exactly
two members:

- ``meta.npy``: a 1-D uint8 array, the UTF-8 bytes of a JSON document
  ``{"format": "cbp.model", "version": 2, "architecture": {...},
  "n_params": N, "dtype": "float32", "sha256": "..."}``;
- ``params.npy``: the flat parameter buffer ``[W1, b1, W2, b2, …]``.

Loading never unpickles (``allow_pickle=False`` and plain numeric arrays
only), reads only a regular file, only uncompressed members, and checks
every member's declared size (in the archive and in its ``.npy`` header)
before reading or allocating it, then the architecture against a schema
and the parameters' count, dtype and SHA-256; it raises
:class:`~cbp.ModelFormatError` for anything else.  Saving writes a
temporary file in the target's directory (with an existing target's
permissions), fsyncs it and renames it over the target, so a failure at
any point leaves the previous file intact.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import os
import secrets
import stat
import zipfile

import numpy as np

from .errors import ModelFormatError

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "cbp.model"
VERSION = 2  # 2: the checksum covers the architecture too
_MEMBERS = {"meta.npy", "params.npy"}
_MAX_META_BYTES = 1 << 20
_NPY_HEADER_BYTES = 1 << 12


def _digest(architecture: dict, params: np.ndarray) -> str:
    """SHA-256 over the architecture (canonical JSON) and the parameter
    bytes, so an edit to either is caught (an integrity check against
    damage and careless edits, not a signature)."""
    h = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(params).tobytes())
    return h.hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _create_temp(directory: str):
    """A new, exclusive temporary file in `directory`: ``(fd, path)``.

    Unlike ``tempfile.mkstemp`` (always mode 0o600) it is created with mode
    0o666 filtered by the umask, so the model ends up with the permissions
    ``open(path, "wb")`` would have given it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".cbp-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory!r}")


def _naming(exc: OSError, path: str) -> OSError:
    """`exc` (which has an errno) as the same kind of OSError about `path`,
    the file the caller asked for, rather than the hidden temporary file."""
    return type(exc)(exc.errno, exc.strerror, path)


def save(net, path) -> None:
    """Write `net` to `path` atomically (see the module docstring).

    Parameters
    ----------
    net : Network
    path : str or os.PathLike
        Written exactly there (no extension is added); an existing file is
        replaced only once the new one is complete.
    """
    from .network import Network

    if not isinstance(net, Network):
        raise TypeError(f"save needs a cbp.Network, got {type(net).__name__}")
    path = os.fsdecode(os.fspath(path))  # bytes paths too
    try:
        existing = os.stat(path)
    except OSError:
        existing = None  # a new file: it gets what open(path, "wb") would give it
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory, expected a "
                                "file name")
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise ValueError(f"cannot save to {path!r}: it is not a regular file (a device, a "
                         "FIFO or a socket would be replaced), expected a file name")
    if not os.path.basename(path):
        raise ValueError(f"cannot save to {path!r}: expected a file name, got "
                         f"{'an empty path' if not path else 'a path ending in a separator'}")
    with net._lock:
        params = net._params.copy()
        config = net.get_config()
    meta = {"format": FORMAT, "version": VERSION, "architecture": config,
            "n_params": int(params.size), "dtype": params.dtype.name,
            "sha256": _digest(config, params)}
    meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    if meta_bytes.size > _MAX_META_BYTES:  # load would refuse the file
        raise ValueError(f"cannot save a network of {len(config['layers'])} layers: its "
                         f"description takes {meta_bytes.size} bytes, more than the "
                         f"{_MAX_META_BYTES} a model file may hold")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    try:
        fd, tmp = _create_temp(directory)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None and hasattr(os, "fchmod"):  # keep the old file's mode
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr("meta.npy", _npy_bytes(meta_bytes))
                zf.writestr("params.npy", _npy_bytes(params))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _naming(exc, path) from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read_npy(zf: zipfile.ZipFile, name: str, max_bytes: int) -> np.ndarray:
    """Member `name`, a plain array of at most `max_bytes` bytes: its sizes
    in the archive and in its .npy header are checked before it is read or
    allocated, and only as many bytes as the header declares are taken."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ModelFormatError(f"member {name} is compressed; cbp writes model files "
                               "uncompressed")
    if info.file_size > max_bytes + _NPY_HEADER_BYTES:
        raise ModelFormatError(f"member {name} declares {info.file_size} bytes, more than "
                               f"the {max_bytes} its content may take")
    with zf.open(info) as f:
        data = f.read(max_bytes + _NPY_HEADER_BYTES + 1)
    if len(data) > max_bytes + _NPY_HEADER_BYTES:
        raise ModelFormatError(f"member {name} is larger than expected")
    fp = _io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                fp, max_header_size=_NPY_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):  # 3.0: a UTF-8 header, ASCII for numeric dtypes
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                fp, max_header_size=_NPY_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise ModelFormatError(f"member {name} is not a .npy array: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ModelFormatError(f"member {name} is not a plain numeric array: dtype {dtype}")
    count = 1
    for dim in shape:
        count *= dim  # Python integers: no overflow
    offset = fp.tell()
    if count * dtype.itemsize > max_bytes:
        raise ModelFormatError(f"member {name} declares {count * dtype.itemsize} bytes of "
                               f"data, more than the {max_bytes} its content may take")
    if count * dtype.itemsize != len(data) - offset:
        raise ModelFormatError(f"member {name} declares shape {tuple(shape)} of {dtype} "
                               f"({count * dtype.itemsize} bytes) but holds "
                               f"{len(data) - offset} bytes")
    a = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return (a.reshape(shape[::-1]).T if fortran else a.reshape(shape)).copy()


def _check_architecture(arch) -> dict:
    from .ops import ACTIVATIONS
    from ._data import LOSSES

    def fail(why):
        raise ModelFormatError(f"invalid architecture: {why}")

    if not isinstance(arch, dict):
        fail("not an object")
    layers = arch.get("layers")
    if not isinstance(layers, list) or not layers:
        fail("no layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or layer.get("type") != "Dense":
            fail(f"layer {i} is not a Dense layer")
        for key in ("in_features", "out_features"):
            v = layer.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 2**31 - 1:
                fail(f"layer {i} {key} = {v!r}")
        if layer.get("activation") not in ACTIVATIONS:
            fail(f"layer {i} activation = {layer.get('activation')!r}")
        if i and layer["in_features"] != layers[i - 1]["out_features"]:
            fail(f"layer {i} does not follow layer {i - 1}")
    if arch.get("loss") not in LOSSES:
        fail(f"loss = {arch.get('loss')!r}")
    if arch.get("dtype") not in ("float32", "float64"):
        fail(f"dtype = {arch.get('dtype')!r}")
    seed = arch.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        fail(f"seed = {seed!r}")
    return arch


def load(path):
    """Read a network written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Network

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    ModelFormatError
        When the file is truncated, altered, of another version, or not a
        cbp model.
    """
    from .network import Network

    path = os.fsdecode(os.fspath(path))  # bytes paths too
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory, expected a model file")
    if not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero, a FIFO: never-ending reads
        raise ModelFormatError(f"{path!r} is not a regular file, expected a model file")
    try:
        with zipfile.ZipFile(path, "r") as zf:
            names = set(zf.namelist())
            if names != _MEMBERS:
                raise ModelFormatError(f"{path!r} is not a cbp model: it holds "
                                       f"{sorted(names)}, expected {sorted(_MEMBERS)}")
            meta_arr = _read_npy(zf, "meta.npy", _MAX_META_BYTES)
            if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
                raise ModelFormatError("model metadata is not a byte string")
            try:
                meta = json.loads(meta_arr.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelFormatError(f"model metadata is not valid JSON: {exc}") from None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ModelFormatError(f"{path!r} is not a cbp model file")
            if meta.get("version") != VERSION:
                raise ModelFormatError(f"model format version {meta.get('version')!r} is not "
                                       f"supported (this cbp reads version {VERSION})")
            arch = _check_architecture(meta.get("architecture"))
            n_params = sum(l["out_features"] * (l["in_features"] + 1) for l in arch["layers"])
            if meta.get("n_params") != n_params or meta.get("dtype") != arch["dtype"]:
                raise ModelFormatError("model metadata disagrees with its architecture")
            itemsize = np.dtype(arch["dtype"]).itemsize
            params = _read_npy(zf, "params.npy", n_params * itemsize)
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            KeyError, NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise ModelFormatError(f"{path!r} is not a readable cbp model: "
                               f"{type(exc).__name__}: {exc}") from None
    if params.dtype != np.dtype(arch["dtype"]) or params.shape != (n_params,):
        raise ModelFormatError(f"parameters have dtype {params.dtype} and shape "
                               f"{params.shape}, expected {arch['dtype']} ({n_params},)")
    if _digest(arch, params) != meta.get("sha256"):
        raise ModelFormatError("architecture and parameters do not match their checksum: "
                               "the file was altered")
    net = Network.from_config(arch)
    net._params[...] = params
    return net
