package controlplane

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
)

// deny and warn bind both policies with their action; off binds none
// (and the component deletes any binding an earlier run made).
func TestVolumeGuardObjects(t *testing.T) {
	for mode, want := range map[string]string{"deny": "Deny", "warn": "Warn", "off": ""} {
		var policies, bindings []string
		for _, o := range VolumeGuardObjects(mode) {
			switch o := o.(type) {
			case admissionv1.ValidatingAdmissionPolicy:
				policies = append(policies, o.Name)
				v := o.Spec.Validations[0]
				for _, f := range networkVolumes {
					if !strings.Contains(v.Expression, "has(") || !strings.Contains(v.Expression, "."+f+")") {
						t.Errorf("%s: %s does not test %s: %s", mode, o.Name, f, v.Expression)
					}
				}
			case admissionv1.ValidatingAdmissionPolicyBinding:
				if len(o.Spec.ValidationActions) != 1 || string(o.Spec.ValidationActions[0]) != want || o.Spec.PolicyName != o.Name {
					t.Errorf("%s: binding %+v", mode, o.Spec)
				}
				bindings = append(bindings, o.Name)
			}
		}
		if strings.Join(policies, ",") != strings.Join(VolumeGuardBindings, ",") {
			t.Errorf("%s: policies %v", mode, policies)
		}
		if wantN := map[bool]int{true: 0, false: 2}[want == ""]; len(bindings) != wantN {
			t.Errorf("%s: bindings %v", mode, bindings)
		}
	}
}
