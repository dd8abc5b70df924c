"""Installing the stack's software on demand: apt packages, Maven Central jars, a Go build.

Downloads land in the cache directory (``~/.cache/cdc-projector`` by default,
``CDCP_CACHE_DIR``) under a versioned folder that is only marked complete
(``.complete``) once everything is there, so a second ``up`` installs nothing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import StackError
from . import proc
from .settings import COMPOSE_MODULE, COMPOSE_VERSION, MAVEN_DEPENDENCY_PLUGIN

_APT_UPDATED = False


def apt_install(*packages: str) -> None:
    """``apt-get install -y`` (after one ``apt-get update`` per process)."""
    global _APT_UPDATED
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _APT_UPDATED:
        proc.run(["apt-get", "update", "-q"], env=env, what="apt-get update", timeout=900)
        _APT_UPDATED = True
    proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env,
             what=f"apt-get install {' '.join(packages)}", timeout=1800)


def ensure_tool(command: str, *apt_packages: str, extra_paths: tuple[str, ...] = ()) -> str:
    """Absolute path of ``command``; installed with apt when missing (if packages are given)."""
    found = shutil.which(command)
    if found:
        return found
    for p in extra_paths:
        if Path(p).exists():
            return p
    if not apt_packages:
        raise StackError(f"{command} is not installed", hint=f"install {command} and re-run")
    apt_install(*apt_packages)
    found = shutil.which(command)
    if not found:
        raise StackError(f"{command} still missing after apt-get install {' '.join(apt_packages)}")
    return found


def is_complete(folder: Path) -> bool:
    return (folder / ".complete").exists()


def mark_complete(folder: Path) -> None:
    (folder / ".complete").write_text("ok\n")


def _pom(artifacts: list[tuple[str, str, str]]) -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in artifacts)
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.cdcprojector.devstack</groupId><artifactId>fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
    <version>{MAVEN_DEPENDENCY_PLUGIN}</version>
  </plugin></plugins></build>
</project>
"""


def maven_copy(folder: Path, artifacts: list[tuple[str, str, str]], log: Path) -> Path:
    """Fetch jars (with their runtime dependencies) from Maven Central into ``folder/libs``."""
    mvn = ensure_tool("mvn", "maven")
    ensure_tool("java", "openjdk-17-jre-headless")
    folder.mkdir(parents=True, exist_ok=True)
    libs = folder / "libs"
    if libs.exists():
        shutil.rmtree(libs)
    (folder / "pom.xml").write_text(_pom(artifacts))
    proc.run([mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
              f"-DoutputDirectory={libs}"], cwd=folder, what="mvn dependency:copy-dependencies",
             timeout=1800, log=log)
    return libs


def maven_unpack(folder: Path, coordinate: str, log: Path) -> Path:
    """Unpack one archive artifact (``g:a:v:type:classifier``) into ``folder/plugins``."""
    mvn = ensure_tool("mvn", "maven")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "plugins"
    if out.exists():
        shutil.rmtree(out)
    (folder / "pom.xml").write_text(_pom([]))
    proc.run([mvn, "-q", "-B", "dependency:unpack", f"-Dartifact={coordinate}",
              f"-DoutputDirectory={out}"], cwd=folder, what=f"mvn dependency:unpack {coordinate}",
             timeout=1800, log=log)
    return out


def go_build_module(folder: Path, module: str, version: str, package: str, binary: str,
                    log: Path) -> Path:
    """Build ``package`` of a Go module at ``version`` into ``folder/bin/binary``.

    The module source comes from the Go module proxy (``go mod download``) and is
    built from a writable copy: FerretDB v1 refuses to start when built with a
    plain ``go install`` (its build/version/version.txt is empty), so the copy
    gets that file written first.
    """
    go = ensure_tool("go", extra_paths=("/usr/local/go/bin/go",))
    folder.mkdir(parents=True, exist_ok=True)
    res = proc.run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=folder,
                   what=f"go mod download {module}@{version}", timeout=1800, log=log)
    src_cache = Path(json.loads(res.stdout)["Dir"])
    src = folder / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(src_cache, src)
    for root, dirs, files in os.walk(src):
        for name in dirs + files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | 0o200)
    version_txt = src / "build" / "version" / "version.txt"
    if version_txt.parent.is_dir():
        version_txt.write_text(version + "\n")
    out = folder / "bin" / binary
    out.parent.mkdir(parents=True, exist_ok=True)
    proc.run([go, "build", "-buildvcs=false", "-trimpath", "-o", str(out), package], cwd=src,
             what=f"go build {package}",
             timeout=1800, log=log)
    shutil.rmtree(src, ignore_errors=True)
    return out


def compose_plugin_path() -> Path:
    """Where the docker CLI looks for the ``compose`` plugin of the current user."""
    return Path.home() / ".docker" / "cli-plugins" / "docker-compose"


def has_compose_cli() -> bool:
    """True when ``docker compose`` works (the engine is not needed)."""
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        proc.run([docker, "compose", "version"], what="docker compose version", timeout=60)
    except StackError:
        return False
    return True


def ensure_compose_cli(cache_dir: Path, log: Path) -> str | None:
    """Build the ``docker compose`` plugin from the Go module proxy when it is missing.

    Only used to validate docker/compose.yaml (``docker compose config`` needs no
    engine). Returns what was done, or None when nothing was needed.
    """
    if has_compose_cli():
        return None
    home = cache_dir / f"compose-{COMPOSE_VERSION}"
    binary = home / "bin" / "docker-compose"
    action = None
    if not (is_complete(home) and binary.exists()):
        go_build_module(home, COMPOSE_MODULE, COMPOSE_VERSION, "./cmd", "docker-compose", log)
        mark_complete(home)
        action = f"installed docker compose {COMPOSE_VERSION} (go build) into {home}"
    target = compose_plugin_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(binary)
    if not shutil.which("docker"):
        ensure_tool("docker", "docker.io")
    return action or f"linked docker compose plugin {target}"
