"""Finding a model's Python environment: the load errors, and unpacking tarballs safely."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from inferkit.errors import ModelLoadError
from inferkit.parallel.environment import find_environment, unpack
from inferkit.settings import ModelParameters, ModelSettings


def settings(folder: Path | None = None, **parameters: str) -> ModelSettings:
    return ModelSettings(
        name="m",
        folder=str(folder) if folder else None,
        parameters=ModelParameters(**parameters),  # type: ignore[arg-type]
    )


def fake_python(folder: Path, script: str) -> Path:
    """``folder/bin/python`` as a shell script (the probe runs it with ``-I -c ...``)."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    return folder


def reason(model: ModelSettings, environments_dir: str | None = None) -> str:
    with pytest.raises(ModelLoadError) as caught:
        find_environment(model, environments_dir)
    return str(caught.value)


PREFIX = "Cannot run model 'm' in its environment: "


def test_no_environment_is_none() -> None:
    assert find_environment(settings(), None) is None
    assert find_environment(ModelSettings(name="m"), None) is None


def test_a_missing_folder(tmp_path: Path) -> None:
    assert reason(settings(environment_path=str(tmp_path / "no"))) == (
        f"{PREFIX}environment_path {tmp_path / 'no'} is not a folder"
    )


def test_a_relative_path_is_resolved_against_the_models_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    assert reason(settings(tmp_path / "model", environment_path="../env")) == (
        f"{PREFIX}environment_path {tmp_path / 'env'} is not a folder"
    )


def test_a_folder_without_python(tmp_path: Path) -> None:
    assert reason(settings(environment_path=str(tmp_path))) == (
        f"{PREFIX}{tmp_path} has no bin/python"
    )


def test_a_python_of_another_minor_version(tmp_path: Path) -> None:
    fake_python(tmp_path, """echo '[[3, 4], ["/x"]]'""")
    server = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert reason(settings(environment_path=str(tmp_path))) == (
        f"{PREFIX}{tmp_path}/bin/python is Python 3.4 and the server runs {server};"
        " they must be the same minor version"
    )


def test_a_python_that_does_not_run(tmp_path: Path) -> None:
    fake_python(tmp_path, "exit 3")
    assert reason(settings(environment_path=str(tmp_path))) == (
        f"{PREFIX}{tmp_path}/bin/python does not run (CalledProcessError)"
    )


def test_the_environments_paths_come_before_the_servers(tmp_path: Path) -> None:
    version = list(sys.version_info[:2])
    fake_python(tmp_path, f"""echo '[{version}, ["/env/lib", "{sys.path[-1]}"]]'""")

    environment = find_environment(settings(environment_path=str(tmp_path)), None)

    assert environment is not None
    assert environment.python == f"{tmp_path}/bin/python"
    assert environment.sys_path == ("/env/lib", sys.path[-1])
    assert environment.worker_path(["/server", sys.path[-1], "/other"]) == [
        "/env/lib",
        sys.path[-1],
        "/server",
        "/other",
    ]


def test_a_missing_tarball(tmp_path: Path) -> None:
    assert reason(settings(environment_tarball=str(tmp_path / "env.tar.gz"))) == (
        f"{PREFIX}environment_tarball {tmp_path / 'env.tar.gz'} is not a file"
    )


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_tarball_is_unpacked_once_by_its_hash(tmp_path: Path) -> None:
    packed = tarball(tmp_path / "env.tar.gz", {"bin/python": b"#!/bin/sh\n"})
    envs = tmp_path / "envs"

    folder = unpack(str(packed), str(envs), settings())
    (Path(folder) / "bin" / "python").write_text("changed")
    again = unpack(str(packed), str(envs), settings())

    assert folder == again
    assert [p.name for p in envs.iterdir()] == [Path(folder).name]
    assert (Path(again) / "bin" / "python").read_text() == "changed"  # reused, not re-unpacked


@pytest.mark.parametrize("name", ["../outside", "/abs/outside"])
def test_a_tarball_cannot_write_outside_its_folder(tmp_path: Path, name: str) -> None:
    packed = tarball(tmp_path / "evil.tar", {"ok": b"", name: b"x"})
    envs = tmp_path / "envs"

    try:
        folder = unpack(str(packed), str(envs), settings())
    except ModelLoadError as exc:  # refused outright (a relative escape)
        assert str(exc).startswith(f"{PREFIX}cannot unpack {packed}: ")
        assert [p.name for p in envs.iterdir()] == []  # the half-unpacked folder is gone
    else:  # or kept inside (an absolute name loses its leading slash)
        assert (Path(folder) / name.lstrip("/")).read_bytes() == b"x"
    assert not (tmp_path / "outside").exists()
    assert not Path("/abs/outside").exists()


def test_a_tarball_cannot_write_through_a_link_outside_its_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    packed = tmp_path / "evil.tar"
    with tarfile.open(packed, "w") as archive:
        link = tarfile.TarInfo("lib")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        archive.addfile(link)
        member = tarfile.TarInfo("lib/planted")
        archive.addfile(member, io.BytesIO(b""))

    with pytest.raises(ModelLoadError):
        unpack(str(packed), str(tmp_path / "envs"), settings())

    assert list(outside.iterdir()) == []
