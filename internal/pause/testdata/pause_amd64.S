# The pod sandbox's pause process for linux/amd64, as internal/pause.Program
# holds it (TestProgramMatchesSource assembles this file and compares).
# Position-independent, no libc, no data but the version string: the ELF
# maps this one page, so a pod's pause costs a page of text shared by every
# pod and its stack.
#
# Signals are blocked and taken with rt_sigtimedwait rather than caught by
# handlers: a blocked signal is queued even for a pid namespace's init
# (which the kernel otherwise spares signals it has no handler for), and
# no handler means no sa_restorer trampoline to write.
	.intel_syntax noprefix
	.text
	.globl _start
_start:
	push	0x14002			# sigset: SIGINT (2), SIGTERM (15), SIGCHLD (17): bit sig-1
	mov	r12, rsp		# r12 = &sigset, kept across syscalls
	xor	edi, edi		# SIG_BLOCK
	mov	rsi, r12
	xor	edx, edx
	mov	r10d, 8			# sizeof(sigset)
	mov	eax, 14			# rt_sigprocmask
	syscall
	cmp	qword ptr [rsp+8], 2	# argc
	jb	reap
	mov	rax, [rsp+24]		# argv[1]
	cmp	word ptr [rax], 0x762d	# "-v"
	jne	reap
	cmp	byte ptr [rax+2], 0
	jne	reap
	mov	edi, 1			# stdout
	lea	rsi, [rip+version]
	mov	edx, version_end-version
	mov	eax, 1			# write
	syscall
	jmp	exit
reap:					# every exited child, then wait for a signal
	mov	rdi, -1			# any child
	xor	esi, esi
	mov	edx, 1			# WNOHANG
	xor	r10d, r10d
	mov	eax, 61			# wait4
	syscall
	test	rax, rax
	jg	reap			# reaped one: there may be more
	mov	rdi, r12
	xor	esi, esi		# no siginfo
	xor	edx, edx		# no timeout
	mov	r10d, 8
	mov	eax, 128		# rt_sigtimedwait
	syscall
	cmp	eax, 2			# SIGINT
	je	exit
	cmp	eax, 15			# SIGTERM
	jne	reap			# SIGCHLD, or interrupted (-EINTR)
exit:
	xor	edi, edi
	mov	eax, 231		# exit_group(0)
	syscall
version:
	.ascii	"usernode-pause v1\n"
version_end:
