// The pod sandbox's pause process for linux/arm64, as internal/pause.Program
// holds it (TestProgramMatchesSource assembles this file and compares).
// The same program as pause_amd64.S: signals blocked and taken with
// rt_sigtimedwait (queued even for a pid namespace's init, and no handler
// or restorer to write), orphans reaped with wait4(WNOHANG).
	.text
	.globl _start
_start:
	mov	x19, sp			// [x19] argc, [x19+8] argv[0], [x19+16] argv[1]
	mov	x9, #0x4002		// sigset: SIGINT (2), SIGTERM (15), SIGCHLD (17): bit sig-1
	movk	x9, #0x1, lsl #16
	str	x9, [sp, #-16]!
	mov	x20, sp			// x20 = &sigset, kept across syscalls
	mov	x0, #0			// SIG_BLOCK
	mov	x1, x20
	mov	x2, #0
	mov	x3, #8			// sizeof(sigset)
	mov	x8, #135		// rt_sigprocmask
	svc	#0
	ldr	x9, [x19]
	cmp	x9, #2
	b.lo	reap
	ldr	x9, [x19, #16]
	ldrh	w10, [x9]
	mov	w11, #0x762d		// "-v"
	cmp	w10, w11
	b.ne	reap
	ldrb	w10, [x9, #2]
	cbnz	w10, reap
	mov	x0, #1			// stdout
	adr	x1, version
	mov	x2, #(version_end-version)
	mov	x8, #64			// write
	svc	#0
	b	exit
reap:					// every exited child, then wait for a signal
	mov	x0, #-1			// any child
	mov	x1, #0
	mov	x2, #1			// WNOHANG
	mov	x3, #0
	mov	x8, #260		// wait4
	svc	#0
	cmp	x0, #0
	b.gt	reap			// reaped one: there may be more
	mov	x0, x20
	mov	x1, #0			// no siginfo
	mov	x2, #0			// no timeout
	mov	x3, #8
	mov	x8, #137		// rt_sigtimedwait
	svc	#0
	cmp	x0, #2			// SIGINT
	b.eq	exit
	cmp	x0, #15			// SIGTERM
	b.ne	reap			// SIGCHLD, or interrupted (-EINTR)
exit:
	mov	x0, #0
	mov	x8, #94			// exit_group(0)
	svc	#0
version:
	.ascii	"usernode-pause v1\n"
version_end:
