package doctor

import (
	"context"
	"fmt"
	"time"
)

func checkTrial(ctx context.Context, r *run) Result {
	if r.sys.Trial == nil {
		return Result{Status: Skip, Found: "no namespace trial was given to doctor"}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.sys.Trial(ctx); err != nil {
		return Result{Status: Fail, Found: fmt.Sprintf("creating a user namespace mapped over the subordinate ranges, and a network namespace in it, failed: %v", err),
			Why: "This is what usernode does first at every start; the error above comes from the kernel or newuidmap/newgidmap. The checks above usually name the cause."}
	}
	return Result{Status: Pass, Found: "created a user namespace mapped over the full subuid/subgid ranges and a network namespace in it"}
}
