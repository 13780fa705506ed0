"""Find each language's toolchain, record its version, and prepare the dependencies that are built once.

Nothing is fetched from crates.io, the Go module proxy or GitHub: the Rust crates come from Debian's
``librust-*-dev`` packages (crate sources under ``/usr/share/cargo/registry``), Go's testify from
``golang-github-stretchr-testify-dev`` (``/usr/share/gocode``), both installed by ``make system-deps``. Built once
into the cache (``$MFT_EVAL_CACHE``, else ``~/.cache/mft-eval``), outside the sandbox, since it is trusted code:

- Rust: a cargo project depending on rand 0.8, regex 1 and md5 0.7, with ``[source]`` replacement pointing at the
  Debian registry (offline); its rlibs are passed to every program's ``rustc`` as ``--extern``.
- Go: a build cache warmed by one ``go test`` that imports testify (GOPATH mode, ``GO111MODULE=off``); each
  program gets writable directories of symlinks to its read-only files, so a program can add entries for itself
  but cannot change the shared ones for the next program.
- C++: codefuse's helper includes (:data:`languages.CPP_HELPERS`) as a precompiled header (``g++ -std=c++11 -x
  c++-header``), given to every compile with ``-include``; GCC ignores a PCH that does not match and parses.
- Java: a class-data-sharing archive of javac's classes (``-XX:ArchiveClassesAtExit`` over one compile).
- JavaScript: ``js-md5`` (``JavaScript/162`` requires it) from the npm registry into the cache, on ``NODE_PATH``.

A language whose toolchain is missing is reported with the reason (the caller skips it, or fails under CI=true).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mft_eval.humaneval_x.languages import CPP_HELPERS

# JIT and GC choices of the JVM for speed (C1 only, serial GC): they change no program's behaviour, only its speed
JAVA_FAST_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
JAVA_FAST_FLAGS_JAVAC = tuple(f"-J{flag}" for flag in JAVA_FAST_FLAGS)
RUST_CRATES = {"rand": "0.8", "regex": "1", "md5": "0.7"}
DEBIAN_CARGO_REGISTRY = Path("/usr/share/cargo/registry")
DEBIAN_GOPATH = Path("/usr/share/gocode")
JS_MD5 = "js-md5@0.8.3"
GO_WARMUP = (
    'package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n)\n\n'
    "func TestWarm(t *testing.T) {\n    assert := assert.New(t)\n    assert.Equal(1, 1)\n}\n"
)


class ToolchainError(RuntimeError):
    """A toolchain or dependency that is needed and cannot be found or prepared."""


@dataclass
class Toolchain:
    """What one language needs on this machine. ``available`` False comes with ``reason``."""

    language: str
    available: bool = True
    reason: str = ""
    tools: dict[str, str] = field(default_factory=dict)  # name -> resolved path (no /etc/alternatives inside)
    versions: dict[str, str] = field(default_factory=dict)
    ro_binds: list[str] = field(default_factory=list)  # read-only paths the sandbox must see (outside /usr)
    env: dict[str, str] = field(default_factory=dict)
    rust_externs: dict[str, str] = field(default_factory=dict)
    rust_deps_dir: str = ""
    go_cache: str = ""
    cpp_pch: str = ""  # codefuse's helper includes, precompiled (helpers.h beside helpers.h.gch)
    java_cds: str = ""  # a class-data archive of javac's classes
    notes: list[str] = field(default_factory=list)

    def unavailable(self, reason: str) -> Toolchain:
        self.available, self.reason = False, reason
        return self


def cache_dir() -> Path:
    env = os.environ.get("MFT_EVAL_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mft-eval"
    return base / "humaneval-x"


def _which(name: str) -> str | None:
    found = shutil.which(name)
    return os.path.realpath(found) if found else None


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout.strip() or out.stderr.strip()).splitlines()
    return text[0].strip() if text else "unknown"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def _readable(path: Path) -> None:
    """Directories 0755 and files 0644 (0755 if executable): the sandbox's uid only reads them."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)


def cpp() -> Toolchain:
    tc = Toolchain("cpp")
    gpp = _which("g++")
    if gpp is None:
        return tc.unavailable("g++ is not installed (Debian: g++)")
    tc.tools["g++"] = gpp
    tc.versions["g++"] = _version([gpp, "--version"])
    key = hashlib.sha256(tc.versions["g++"].encode()).hexdigest()[:12]
    pch_dir = cache_dir() / f"cpp-{key}"
    header = pch_dir / "helpers.h"
    if not (pch_dir / "helpers.h.gch").is_file():
        _mkdir(pch_dir)
        header.write_text("".join(line + "\n" for line in CPP_HELPERS), encoding="utf-8")
        tmp = pch_dir / "helpers.h.gch.tmp"
        out = subprocess.run([gpp, "-std=c++11", "-x", "c++-header", str(header), "-o", str(tmp)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode == 0:
            os.replace(tmp, pch_dir / "helpers.h.gch")
            _readable(pch_dir)
        else:
            tc.notes.append(f"the precompiled header did not build ({out.stderr.strip()[:200]}): plain compiles")
    if (pch_dir / "helpers.h.gch").is_file():
        tc.cpp_pch = str(header)
        tc.ro_binds.append(str(pch_dir))
    if not Path("/usr/include/openssl/md5.h").is_file():
        tc.notes.append("libssl-dev is missing: CPP/162 (openssl/md5.h) cannot compile")
    if not Path("/usr/include/boost/any.hpp").is_file():
        tc.notes.append("libboost-dev is missing: CPP/22 and CPP/137 (boost/any.hpp) cannot compile")
    return tc


def java() -> Toolchain:
    tc = Toolchain("java")
    javac, java_ = _which("javac"), _which("java")
    if javac is None or java_ is None:
        return tc.unavailable("javac/java are not installed (Debian: default-jdk-headless)")
    tc.tools.update(javac=javac, java=java_)
    tc.versions.update(javac=_version([javac, "-version"]), java=_version([java_, "-version"]))
    # the JDK's conf/security files are links into /etc/java-N-openjdk (MessageDigest reads java.security)
    tc.ro_binds += sorted(str(p) for p in Path("/etc").glob("java-*-openjdk") if p.is_dir())
    key = hashlib.sha256((tc.versions["javac"] + tc.versions["java"]).encode()).hexdigest()[:12]
    cds_dir = cache_dir() / f"java-{key}"
    archive = cds_dir / "javac.jsa"
    if not archive.is_file():
        work = _mkdir(cds_dir / "warmup")
        (work / "Main.java").write_text("import java.util.*;\nclass Main { public static void main(String[] a) "
                                        "{ List<Integer> x = new ArrayList<>(); System.out.println(x); } }\n")
        subprocess.run([javac, *JAVA_FAST_FLAGS_JAVAC, f"-J-XX:ArchiveClassesAtExit={cds_dir / 'javac.jsa.tmp'}",
                        "Main.java"], cwd=work, capture_output=True, timeout=600)
        if (cds_dir / "javac.jsa.tmp").is_file():
            os.replace(cds_dir / "javac.jsa.tmp", archive)
            _readable(cds_dir)
    if archive.is_file():
        tc.java_cds = str(archive)
        tc.ro_binds.append(str(cds_dir))
    return tc


def js(prepare: bool = True) -> Toolchain:
    tc = Toolchain("js")
    node = _which("node")
    if node is None:
        return tc.unavailable("node is not installed (Debian: nodejs)")
    tc.tools["node"] = node
    tc.versions["node"] = _version([node, "--version"])
    # node reads OpenSSL's configuration at start and exits (code 13) when it cannot
    tc.ro_binds += [p for p in ("/etc/ssl/openssl.cnf",) if os.path.exists(p)]
    modules = cache_dir() / "node" / "node_modules"
    if not (modules / "js-md5").is_dir() and prepare:
        npm = _which("npm")
        if npm is not None:
            _mkdir(modules.parent)
            subprocess.run([npm, "install", "--prefix", str(modules.parent), "--no-audit", "--no-fund",
                            "--no-save", JS_MD5], capture_output=True, timeout=300)
            if modules.is_dir():
                _readable(modules.parent)
    if (modules / "js-md5").is_dir():
        tc.env["NODE_PATH"] = str(modules)
        tc.ro_binds.append(str(modules))
        pkg = json.loads((modules / "js-md5" / "package.json").read_text(encoding="utf-8"))
        tc.versions["js-md5"] = str(pkg.get("version"))
    else:
        tc.notes.append(f"{JS_MD5} is not installed (npm registry unreachable?): JavaScript/162 cannot require it")
    return tc


def go(prepare: bool = True) -> Toolchain:
    tc = Toolchain("go")
    gobin = _which("go")
    if gobin is None:
        return tc.unavailable("go is not installed (Debian: golang-go)")
    if not (DEBIAN_GOPATH / "src/github.com/stretchr/testify/assert").is_dir():
        return tc.unavailable("testify is not installed (Debian: golang-github-stretchr-testify-dev)")
    tc.tools["go"] = gobin
    tc.versions["go"] = _version([gobin, "version"])
    tc.versions["testify"] = _debian_version("golang-github-stretchr-testify-dev")
    tc.env.update(GO111MODULE="off", GOPATH=str(DEBIAN_GOPATH), GOFLAGS="", GOTOOLCHAIN="local", CGO_ENABLED="1",
                  GOPROXY="off", GOSUMDB="off", GOTELEMETRY="off")
    key = hashlib.sha256((tc.versions["go"] + tc.versions["testify"]).encode()).hexdigest()[:12]
    cache = cache_dir() / f"go-{key}"
    ready = cache / "gocache" / "README"
    if not ready.is_file():
        if not prepare:
            return tc.unavailable(f"Go's build cache is not prepared ({cache})")
        work = _mkdir(cache / "warmup")
        (work / "main_test.go").write_text(GO_WARMUP, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), **tc.env,
               "GOCACHE": str(cache / "gocache")}
        out = subprocess.run([gobin, "test", "main_test.go"], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise ToolchainError(f"warming Go's build cache failed: {(out.stderr or out.stdout).strip()[:500]}")
        _readable(cache)
    tc.go_cache = str(cache / "gocache")
    tc.ro_binds.append(tc.go_cache)
    return tc


def _debian_version(package: str) -> str:
    return _version(["dpkg-query", "-W", "-f=${Version}", package]) if shutil.which("dpkg-query") else "unknown"


def rust(prepare: bool = True) -> Toolchain:
    tc = Toolchain("rust")
    rustc_proxy, cargo = shutil.which("rustc"), shutil.which("cargo")
    if rustc_proxy is None or cargo is None:
        return tc.unavailable("rustc/cargo are not installed")
    missing = [c for c in RUST_CRATES if not any(DEBIAN_CARGO_REGISTRY.glob(f"{c}-*"))]
    if missing:
        return tc.unavailable(f"crates {missing} are missing from {DEBIAN_CARGO_REGISTRY} "
                              "(Debian: librust-rand-dev librust-regex-dev librust-md5-dev)")
    sysroot = subprocess.run([rustc_proxy, "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    rustc = os.path.join(sysroot, "bin", "rustc")
    if not os.path.isfile(rustc):
        return tc.unavailable(f"rustc's sysroot {sysroot!r} has no bin/rustc")
    linker = _which("cc") or _which("gcc")
    if linker is None:
        return tc.unavailable("no C linker (cc) for rustc")
    tc.tools.update(rustc=rustc, cargo=shutil.which("cargo") or "", linker=linker)
    tc.versions["rustc"] = _version([rustc, "--version"])
    tc.versions["cargo"] = _version([cargo, "--version"])
    if not sysroot.startswith("/usr/"):
        tc.ro_binds.append(sysroot)
    key = hashlib.sha256(tc.versions["rustc"].encode()).hexdigest()[:12]
    project = cache_dir() / f"rust-{key}"
    manifest = project / "externs.json"
    if not manifest.is_file():
        if not prepare:
            return tc.unavailable(f"the Rust crates are not built ({project})")
        _build_rust_deps(project, cargo)
    data = json.loads(manifest.read_text(encoding="utf-8"))
    tc.rust_externs = data["externs"]
    tc.rust_deps_dir = data["deps_dir"]
    tc.versions.update({f"crate {k}": v for k, v in data["versions"].items()})
    tc.ro_binds.append(tc.rust_deps_dir)
    return tc


def _build_rust_deps(project: Path, cargo: str) -> None:
    _mkdir(project / "src")
    _mkdir(project / ".cargo")
    deps = "\n".join(f'{name} = "{version}"' for name, version in RUST_CRATES.items())
    (project / "Cargo.toml").write_text(
        '[package]\nname = "humaneval_x_deps"\nversion = "0.1.0"\nedition = "2021"\n\n[lib]\npath = "src/lib.rs"\n\n'
        f"[dependencies]\n{deps}\n", encoding="utf-8")
    (project / "src" / "lib.rs").write_text("", encoding="utf-8")
    (project / ".cargo" / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "debian"\n\n'
        f'[source.debian]\ndirectory = "{DEBIAN_CARGO_REGISTRY}"\n\n[net]\noffline = true\n', encoding="utf-8")
    out = subprocess.run([cargo, "build", "--offline", "--message-format=json"], cwd=project, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise ToolchainError(f"building the Rust crates in {project} failed: {out.stderr.strip()[-800:]}")
    externs, versions = {}, {}
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] in RUST_CRATES:
            rlibs = [f for f in msg["filenames"] if f.endswith(".rlib")]
            if rlibs:
                externs[msg["target"]["name"]] = rlibs[0]
                versions[msg["target"]["name"]] = msg["package_id"].split("@")[-1].split(" ")[-1].strip("#)")
    if set(externs) != set(RUST_CRATES):
        raise ToolchainError(f"cargo built {sorted(externs)}, expected {sorted(RUST_CRATES)}")
    deps_dir = str(Path(next(iter(externs.values()))).parent)
    _readable(project / "target")
    tmp = project / "externs.json.tmp"
    tmp.write_text(json.dumps({"externs": externs, "deps_dir": deps_dir, "versions": versions}, indent=1))
    os.replace(tmp, project / "externs.json")


_DETECT = {"cpp": lambda prepare: cpp(), "java": lambda prepare: java(), "js": js, "go": go, "rust": rust}


def detect(lang: str, prepare: bool = True) -> Toolchain:
    """The toolchain of ``lang``; with ``prepare``, the one-time dependencies are built when missing."""
    try:
        return _DETECT[lang](prepare)
    except ToolchainError as exc:
        return Toolchain(lang).unavailable(str(exc))
