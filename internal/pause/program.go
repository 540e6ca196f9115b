package pause

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// Version is what the program prints for `-v`, as Kubernetes' pause does.
// It names the program, not the usernode release, so the pause image (and
// its ID) stays the same from one usernode build to the next.
const Version = "usernode-pause v1\n"

// Program is the pod sandbox's pause process for goarch (amd64, arm64) as
// a complete static ELF executable, or nil for an architecture it is not
// written for (the node then uses usernode's own /pause entry, pause.go).
//
// Why machine code, held here as bytes: usernode's own binary as pause
// costs every pod 6.8 MB PSS (measured, issue 15: a Go runtime per pod);
// a C pause needs gcc at build
// time, and `go install`, `go build ./...` and `go vet` on a fresh clone
// have none to run, so it would either be missing (and the 6.8 MB back) or
// a prebuilt blob in the repository. This is ~350 bytes with no toolchain
// at all: the ELF header and one page of text, whose cost per pod is its
// stack page. testdata/pause_{amd64,arm64}.S are the source;
// TestProgramMatchesSource assembles them (binutils) and compares.
func Program(goarch string) []byte {
	switch goarch {
	case "amd64":
		return executable(elf.EM_X86_64, 0x1000, amd64Text())
	case "arm64":
		// 64 KiB: the largest page size arm64 kernels run with.
		return executable(elf.EM_AARCH64, 0x10000, arm64Text())
	}
	return nil
}

// base is where the one segment is mapped: the traditional ET_EXEC
// address, above mmap_min_addr and aligned for 64 KiB pages.
const base = 0x400000

// TextOffset is where the code starts in the file (and base+TextOffset the
// entry point): right after the ELF header and its two program headers.
const TextOffset = 64 + 2*56

// executable wraps text in an ELF header and two program headers: one
// PT_LOAD mapping the whole file read+execute (the code only reads its
// version string and writes nothing but the stack) and PT_GNU_STACK, so
// the stack is not executable.
func executable(machine elf.Machine, align uint64, text []byte) []byte {
	size := uint64(TextOffset + len(text))
	var b bytes.Buffer
	le := binary.LittleEndian
	// Writes to a bytes.Buffer do not fail.
	_ = binary.Write(&b, le, elf.Header64{
		Ident:     [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     base + TextOffset,
		Phoff:     64,
		Ehsize:    64,
		Phentsize: 56,
		Phnum:     2,
	})
	_ = binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X),
		Vaddr: base, Paddr: base, Filesz: size, Memsz: size, Align: align})
	_ = binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_GNU_STACK), Flags: uint32(elf.PF_R | elf.PF_W), Align: 16})
	b.Write(text)
	return b.Bytes()
}

// amd64Text is testdata/pause_amd64.S assembled (GNU as), one instruction
// a line. Offsets are from the start of the text.
func amd64Text() []byte {
	return append(hexBytes(
		"68 02 40 01 00",       // 00 push 0x14002: sigset {SIGINT, SIGTERM, SIGCHLD}, bit sig-1
		"49 89 e4",             // 05 mov r12, rsp: &sigset, kept across syscalls
		"31 ff",                // 08 xor edi, edi: SIG_BLOCK
		"4c 89 e6",             // 0a mov rsi, r12
		"31 d2",                // 0d xor edx, edx
		"41 ba 08 00 00 00",    // 0f mov r10d, 8: sizeof(sigset)
		"b8 0e 00 00 00",       // 15 mov eax, 14: rt_sigprocmask
		"0f 05",                // 1a syscall
		"48 83 7c 24 08 02",    // 1c cmp qword [rsp+8], 2: argc
		"72 2c",                // 22 jb reap
		"48 8b 44 24 18",       // 24 mov rax, [rsp+24]: argv[1]
		"66 81 38 2d 76",       // 29 cmp word [rax], "-v"
		"75 20",                // 2e jne reap
		"80 78 02 00",          // 30 cmp byte [rax+2], 0
		"75 1a",                // 34 jne reap
		"bf 01 00 00 00",       // 36 mov edi, 1: stdout
		"48 8d 35 52 00 00 00", // 3b lea rsi, [rip+version]
		"ba 12 00 00 00",       // 42 mov edx, len(version)
		"b8 01 00 00 00",       // 47 mov eax, 1: write
		"0f 05",                // 4c syscall
		"eb 3b",                // 4e jmp exit
		"48 c7 c7 ff ff ff ff", // 50 reap: mov rdi, -1: any child
		"31 f6",                // 57 xor esi, esi
		"ba 01 00 00 00",       // 59 mov edx, 1: WNOHANG
		"45 31 d2",             // 5e xor r10d, r10d
		"b8 3d 00 00 00",       // 61 mov eax, 61: wait4
		"0f 05",                // 66 syscall
		"48 85 c0",             // 68 test rax, rax
		"7f e3",                // 6b jg reap: reaped one, there may be more
		"4c 89 e7",             // 6d mov rdi, r12
		"31 f6",                // 70 xor esi, esi: no siginfo
		"31 d2",                // 72 xor edx, edx: no timeout
		"41 ba 08 00 00 00",    // 74 mov r10d, 8
		"b8 80 00 00 00",       // 7a mov eax, 128: rt_sigtimedwait
		"0f 05",                // 7f syscall
		"83 f8 02",             // 81 cmp eax, 2: SIGINT
		"74 05",                // 84 je exit
		"83 f8 0f",             // 86 cmp eax, 15: SIGTERM
		"75 c5",                // 89 jne reap: SIGCHLD, or -EINTR
		"31 ff",                // 8b exit: xor edi, edi
		"b8 e7 00 00 00",       // 8d mov eax, 231: exit_group(0)
		"0f 05",                // 92 syscall
	), Version...) // 94 version
}

// arm64Text is testdata/pause_arm64.S assembled (GNU as), one
// little-endian instruction word a line.
func arm64Text() []byte {
	return append(hexWords(
		0x910003f3, // 00 mov x19, sp: [x19] argc, [x19+8] argv[0], [x19+16] argv[1]
		0xd2880049, // 04 mov x9, #0x4002
		0xf2a00029, // 08 movk x9, #0x1, lsl #16: sigset {SIGINT, SIGTERM, SIGCHLD}
		0xf81f0fe9, // 0c str x9, [sp, #-16]!
		0x910003f4, // 10 mov x20, sp: &sigset, kept across syscalls
		0xd2800000, // 14 mov x0, #0: SIG_BLOCK
		0xaa1403e1, // 18 mov x1, x20
		0xd2800002, // 1c mov x2, #0
		0xd2800103, // 20 mov x3, #8: sizeof(sigset)
		0xd28010e8, // 24 mov x8, #135: rt_sigprocmask
		0xd4000001, // 28 svc #0
		0xf9400269, // 2c ldr x9, [x19]
		0xf100093f, // 30 cmp x9, #2: argc
		0x540001c3, // 34 b.lo reap
		0xf9400a69, // 38 ldr x9, [x19, #16]: argv[1]
		0x7940012a, // 3c ldrh w10, [x9]
		0x528ec5ab, // 40 mov w11, #0x762d: "-v"
		0x6b0b015f, // 44 cmp w10, w11
		0x54000121, // 48 b.ne reap
		0x3940092a, // 4c ldrb w10, [x9, #2]
		0x350000ea, // 50 cbnz w10, reap
		0xd2800020, // 54 mov x0, #1: stdout
		0x10000341, // 58 adr x1, version
		0xd2800242, // 5c mov x2, #len(version)
		0xd2800808, // 60 mov x8, #64: write
		0xd4000001, // 64 svc #0
		0x14000013, // 68 b exit
		0x92800000, // 6c reap: mov x0, #-1: any child
		0xd2800001, // 70 mov x1, #0
		0xd2800022, // 74 mov x2, #1: WNOHANG
		0xd2800003, // 78 mov x3, #0
		0xd2802088, // 7c mov x8, #260: wait4
		0xd4000001, // 80 svc #0
		0xf100001f, // 84 cmp x0, #0
		0x54ffff2c, // 88 b.gt reap: reaped one, there may be more
		0xaa1403e0, // 8c mov x0, x20
		0xd2800001, // 90 mov x1, #0: no siginfo
		0xd2800002, // 94 mov x2, #0: no timeout
		0xd2800103, // 98 mov x3, #8
		0xd2801128, // 9c mov x8, #137: rt_sigtimedwait
		0xd4000001, // a0 svc #0
		0xf100081f, // a4 cmp x0, #2: SIGINT
		0x54000060, // a8 b.eq exit
		0xf1003c1f, // ac cmp x0, #15: SIGTERM
		0x54fffde1, // b0 b.ne reap: SIGCHLD, or -EINTR
		0xd2800000, // b4 exit: mov x0, #0
		0xd2800bc8, // b8 mov x8, #94: exit_group(0)
		0xd4000001, // bc svc #0
	), Version...) // c0 version
}

func hexBytes(ins ...string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(ins, ""), " ", ""))
	if err != nil {
		panic(err) // a typo above; every test that builds the program fails
	}
	return b
}

func hexWords(ws ...uint32) []byte {
	b := make([]byte, 0, 4*len(ws))
	for _, w := range ws {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}
