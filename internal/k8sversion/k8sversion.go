// Package k8sversion is the one place that says which Kubernetes versions
// usernode configures.
package k8sversion

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/version"
)

const (
	// Default is the version usernode builds and tests.
	Default = "v1.37.2"
	// Min is the oldest release usernode configures: older ones lack
	// config fields a rootless node depends on (failCgroupV1, the
	// KubeletInUserNamespace gate's later behaviour) and are out of
	// upstream support.
	Min = "1.30.0"
)

// Parse reads "v1.37.2", "1.37.2" or "v1.37.2-rc.0" ("" is Default) and
// refuses releases older than Min.
func Parse(s string) (*version.Version, error) {
	if s == "" {
		s = Default
	}
	v, err := version.ParseGeneric(s)
	if err != nil {
		return nil, fmt.Errorf("kubernetes version %q: %w", s, err)
	}
	if v.LessThan(version.MustParseGeneric(Min)) {
		return nil, fmt.Errorf("kubernetes %s is not supported: usernode needs %s or newer (older releases lack config fields a rootless node depends on, and are out of upstream support)", s, Min)
	}
	return v, nil
}
