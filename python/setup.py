"""Builds the noisear-gpu wheel: the Python package, libnoisear.so and the shipped weights.

    swift build -c release --static-swift-stdlib --product noisear --scratch-path .build/static
    pip wheel ./python -w dist/

The library is taken from $NOISEAR_LIBRARY (a file), else .build/static/release/libnoisear.so,
else .build/release/libnoisear.so. Swift runtime libraries it still needs (a build without
--static-swift-stdlib) are copied beside it and every bundled library's run path becomes
$ORIGIN (patchelf), so the wheel needs no Swift toolchain on the target. The wheel is tagged for
this platform (it holds native code). Build files go to a temporary folder, not the source tree.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WEIGHTS = ROOT / "Sources" / "NoiseARShapes" / "weights"
SWIFT_RUNTIME = re.compile(r"^lib(swift|Foundation|_Foundation|dispatch|BlocksRuntime).*\.so")


def find_library() -> Path:
    candidates = [os.environ.get("NOISEAR_LIBRARY"), ROOT / ".build/static/release/libnoisear.so",
                  ROOT / ".build/release/libnoisear.so"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    sys.exit("libnoisear.so not found: run `swift build -c release --static-swift-stdlib --product noisear "
             "--scratch-path .build/static` in the repository (or set NOISEAR_LIBRARY)")


def needed(lib: Path):
    out = subprocess.run(["readelf", "-d", str(lib)], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def runpath(lib: Path):
    out = subprocess.run(["readelf", "-d", str(lib)], check=True, capture_output=True, text=True).stdout
    m = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.+?)\]", out)
    return [p for p in (m.group(1).split(":") if m else []) if p and "$ORIGIN" not in p]


def bundle(lib: Path, dest: Path):
    """Copies lib and, transitively, the Swift runtime libraries it needs into dest."""
    search = runpath(lib) + ["/usr/lib/swift/linux"]
    shutil.copy2(lib, dest / lib.name)
    todo, done = [dest / lib.name], set()
    while todo:
        current = todo.pop()
        for name in needed(current):
            if not SWIFT_RUNTIME.match(name) or name in done:
                continue
            source = next((Path(d) / name for d in search if (Path(d) / name).is_file()), None)
            if source is None:
                sys.exit(f"{current.name} needs {name}, not found in {search}")
            done.add(name)
            shutil.copy2(source, dest / name)
            todo.append(dest / name)
    bundled = [dest / lib.name] + [dest / n for n in sorted(done)]
    if done or runpath(dest / lib.name):
        if not shutil.which("patchelf"):
            sys.exit("patchelf is needed to bundle the Swift runtime (apt-get install patchelf), or build the "
                     "library with --static-swift-stdlib")
        for f in bundled:
            os.chmod(f, 0o755)
            subprocess.run(["patchelf", "--set-rpath", "$ORIGIN", str(f)], check=True)
    return bundled


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "noisear_gpu"
        dest.mkdir(parents=True, exist_ok=True)
        files = bundle(find_library(), dest)
        for w in sorted(WEIGHTS.glob("*.safetensors")):
            shutil.copy2(w, dest / w.name)  # the library looks beside itself for the shipped models
        print("bundled: " + ", ".join(f.name for f in files) + f"; weights: {len(list(WEIGHTS.glob('*.safetensors')))}")


class BinaryDistribution(Distribution):
    """Native libraries inside: installed as platform-specific files (the wheel's root is platlib)."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": BuildWithLibrary}
try:
    from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        """Native code inside: a platform wheel (py3-none-linux_x86_64), not py3-none-any."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # building an sdist or installing in place needs no wheel package
    pass

scratch = tempfile.mkdtemp(prefix="noisear-wheel-build-")
setup(cmdclass=cmdclass, distclass=BinaryDistribution,
      options={"build": {"build_base": os.path.join(scratch, "build")},
               "egg_info": {"egg_base": scratch}})
