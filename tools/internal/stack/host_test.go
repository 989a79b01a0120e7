package stack

import (
	"testing"
	"time"
)

func TestParseCPUInfoReadsTheModelAndTheHypervisorFlag(t *testing.T) {
	info := "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme hypervisor lahf_lm\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme hypervisor\n"
	if m, v := parseCPUInfo(info); m != "AMD EPYC" || !v {
		t.Errorf("got %q, virtual %v", m, v)
	}
	if m, v := parseCPUInfo("model name : Intel(R) Xeon(R)\nflags : fpu vme hypervisorx\n"); m != "Intel(R) Xeon(R)" || v {
		t.Errorf("got %q, virtual %v (a flag that only starts with hypervisor is not it)", m, v)
	}
	if m, v := parseCPUInfo(""); m != "?" || v {
		t.Errorf("empty: got %q, %v", m, v)
	}
}

func TestMeasureHostMeasuresBothCosts(t *testing.T) {
	h := MeasureHost(100 * time.Millisecond)
	if h.Syscall <= 0 || h.Syscall > time.Millisecond {
		t.Errorf("a system call took %v of CPU", h.Syscall)
	}
	if h.WakeRounds < 20 || h.Wake <= 0 {
		t.Errorf("%d wake-ups at %v each", h.WakeRounds, h.Wake)
	}
	if h.CPUs < 1 || h.String() == "" {
		t.Errorf("host %+v", h)
	}
}
