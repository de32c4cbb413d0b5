"""Build and run the generated C: host (gcc with sanitizers) and emulated Cortex-M4F (QEMU mps2-an386).

    out, status = run_host(build_dir, states)          # [N, 4] from the sanitizer build, self-test status
    out, status, insns = run_qemu(build_dir, states)   # same on the emulated Cortex-M4F, + instructions / inference
    sizes = arm_sizes(build_dir)                       # flash / RAM of the policy on the target

The driver, start-up code and linker script are deploy/c/driver.c, startup.c and link.ld. Instruction
counts come from QEMU (``-icount shift=0``, SysTick: one tick = 40 guest instructions); the latency
estimate multiplies them by an assumed CPI of ``CYCLES_PER_INSTRUCTION`` = 1.5 at 168 MHz.

Design note (bare-metal recipe, instruction counting, the CPI): docs/design/export_c.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from deploy.export_c import c_source

ARM_CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]
HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fsanitize=address,undefined",
               "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
INSNS_PER_TICK = 40  # 1 ns per instruction (-icount shift=0) / 25 MHz SysTick reference clock
ARM_OPT = "-O3"  # -O3 vs -O2: 10-27 % fewer instructions per inference for ~4-6 KB more flash
CYCLES_PER_INSTRUCTION = 1.5
CLOCK_HZ = 168e6
TIMED_RUNS = 50
APT_HINT = "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm (or `make setup`)"

# The driver, the start-up code and the linker script are plain files in deploy/c/ (package data).
DRIVER_C = c_source("driver.c")
STARTUP_C = c_source("startup.c")
LINKER_LD = c_source("link.ld")


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found; install it: {APT_HINT}")
    return path


def _write_inputs(build: Path, states: np.ndarray) -> None:
    np.ascontiguousarray(states, dtype="<f4").tofile(build / "in.bin")
    (build / "out.bin").unlink(missing_ok=True)


def _read_outputs(build: Path, n: int) -> np.ndarray:
    out = np.fromfile(build / "out.bin", dtype="<f4")
    if out.size != 4 * n:
        raise RuntimeError(f"the driver wrote {out.size} floats for {n} inputs")
    return out.reshape(n, 4)


def _self_test(stdout: str) -> int:
    m = re.search(r"self_test (-?\d+)", stdout)
    if m is None:
        raise RuntimeError(f"no self-test result in the driver's output:\n{stdout}")
    return int(m.group(1))


def build_host(build: Path, cc: str = "gcc", sanitize: bool = True) -> Path:
    """Compile policy.c + the driver for the host (C99, -Wall -Wextra -Werror, ASan + UBSan)."""
    build = Path(build).resolve()  # the tools run with cwd=build: a relative path would name the wrong file
    (build / "driver.c").write_text(DRIVER_C)
    flags = HOST_CFLAGS if sanitize else [f for f in HOST_CFLAGS if "sanitize" not in f]
    exe = build / "policy_host"
    _run([_need(cc), *flags, "policy.c", "driver.c", "-lm", "-o", exe.name], build)
    return exe


def run_host(build: Path, states: np.ndarray, sanitize: bool = True) -> tuple[np.ndarray, int]:
    """Actions [N, 4] of the host build on ``states`` [N, D] and the self-test status (0 = pass)."""
    build = Path(build).resolve()  # the tools run with cwd=build: a relative path would name the wrong file
    exe = build_host(build, sanitize=sanitize)
    _write_inputs(build, states)
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = subprocess.run([str(exe)], cwd=build, capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode not in (0, 1) or "runtime error" in proc.stderr or "AddressSanitizer" in proc.stderr:
        raise RuntimeError(f"host build failed at run time ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return _read_outputs(build, len(states)), _self_test(proc.stdout)


def build_arm(build: Path, timed_runs: int = TIMED_RUNS) -> Path:
    """Cross-compile policy.c + driver + start-up for the Cortex-M4F (hard float, semihosting)."""
    build = Path(build).resolve()  # the tools run with cwd=build: a relative path would name the wrong file
    (build / "driver.c").write_text(DRIVER_C)
    (build / "startup.c").write_text(STARTUP_C)
    (build / "link.ld").write_text(LINKER_LD)
    elf = build / "policy_m4.elf"
    _run(
        [_need("arm-none-eabi-gcc"), *ARM_CFLAGS, "--specs=rdimon.specs", "-std=c99", ARM_OPT, "-Wall", "-Wextra",
         "-Werror", "-DPOLICY_SYSTICK", f"-DTIMED_RUNS={timed_runs}", "-T", "link.ld", "startup.c", "policy.c",
         "driver.c", "-lm", "-o", elf.name],
        build,
    )
    return elf


def run_qemu(build: Path, states: np.ndarray, timeout: float = 60) -> tuple[np.ndarray, int, float]:
    """Actions [N, 4] from the Cortex-M4F build under QEMU, the self-test status and instructions / inference."""
    build = Path(build).resolve()  # the tools run with cwd=build: a relative path would name the wrong file
    elf = build_arm(build)
    _write_inputs(build, states)
    cmd = [_need("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", elf.name]
    proc = subprocess.run(cmd, cwd=build, capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"QEMU run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"ticks (\d+) runs (\d+)", proc.stdout)
    if m is None:
        raise RuntimeError(f"no timing in the QEMU output:\n{proc.stdout}\n{proc.stderr}")
    insns = int(m.group(1)) * INSNS_PER_TICK / int(m.group(2))
    return _read_outputs(build, len(states)), _self_test(proc.stdout), insns


def arm_sizes(build: Path) -> dict[str, int]:
    """Flash and RAM of the policy alone on the Cortex-M4F (policy.c at ARM_OPT, arm-none-eabi-size).

    flash = text + data of policy.o (code, const weights, golden vectors); ram = data + bss (buffers,
    expanded codebooks) + the deepest stack frame chain of policy_forward from -fstack-usage
    (policy_forward's frame plus its largest callee's). libm (expf, sqrtf, fmaf: inlined as VFMA) comes on top of flash.
    """
    build = Path(build).resolve()  # the tools run with cwd=build: a relative path would name the wrong file
    _run([_need("arm-none-eabi-gcc"), *ARM_CFLAGS, "-std=c99", ARM_OPT, "-fstack-usage", "-c", "policy.c",
          "-o", "policy_m4.o"], build)
    proc = _run([_need("arm-none-eabi-size"), "-A", "policy_m4.o"], build)
    sections = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    text = sum(v for k, v in sections.items() if k.startswith((".text", ".rodata")))
    data = sum(v for k, v in sections.items() if k.startswith(".data"))
    bss = sum(v for k, v in sections.items() if k.startswith(".bss"))
    frames = {}
    su = build / "policy_m4.su"
    if su.exists():
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                frames[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    stack = frames.get("policy_forward", 0) + max(
        (v for k, v in frames.items() if k not in ("policy_forward", "policy_self_test")), default=0
    )
    return {"flash_bytes": text + data, "ram_bytes": data + bss + stack, "text": text, "data": data, "bss": bss,
            "stack_bytes": stack}


def est_ms(instructions: float) -> float:
    """Estimated latency in ms at 168 MHz from an instruction count (see the module docstring for the CPI)."""
    return instructions * CYCLES_PER_INSTRUCTION / CLOCK_HZ * 1e3
