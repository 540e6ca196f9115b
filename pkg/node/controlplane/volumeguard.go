package controlplane

import (
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The volume guard, from the seed page's caveats: a rootless node cannot
// mount network storage (NFS, iSCSI, FC, RBD, CephFS, GlusterFS), since
// its kubelet runs in a user namespace, where the kernel refuses those
// mounts. Without the guard such a pod hangs in ContainerCreating with a
// mount error deep in the kubelet's log; with it, kubectl is told at
// create, naming the volume. Two ValidatingAdmissionPolicies (CEL in
// kube-apiserver, no webhook to run): one over pods, one over
// PersistentVolumes (their schemas differ, and CEL is type-checked against
// the one it matches).

// VolumeGuardBindings are the policies' names and their bindings'; `--volume-guard off` deletes the bindings.
var VolumeGuardBindings = []string{"usernode-volume-guard-pods", "usernode-volume-guard-pvs"}

// networkVolumes are the volume sources of core/v1 (in pods and in
// PersistentVolumes alike) that mount network storage in the kernel.
var networkVolumes = []string{"nfs", "iscsi", "fc", "rbd", "cephfs", "glusterfs"}

// hasAny is a CEL test of whether v has one of networkVolumes.
func hasAny(v string) string {
	var ors []string
	for _, f := range networkVolumes {
		ors = append(ors, "has("+v+"."+f+")")
	}
	return strings.Join(ors, " || ")
}

const whyNot = ` uses network storage (` + "nfs, iscsi, fc, rbd, cephfs, glusterfs" + `), which this rootless node cannot mount: its kubelet runs in a user namespace, where the kernel refuses such mounts. Use local, hostPath, emptyDir, configMap, secret or projected volumes (usernode --volume-guard=warn admits it anyway)'`

// VolumeGuardObjects are the policies and, for deny and warn, their
// bindings.
func VolumeGuardObjects(mode string) []any {
	policy := func(name, resource, valid, message string) admissionv1.ValidatingAdmissionPolicy {
		fail := admissionv1.Fail
		return admissionv1.ValidatingAdmissionPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: &fail,
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
						Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{resource}},
					}}}},
				Validations: []admissionv1.Validation{{Expression: valid, MessageExpression: message, Reason: ptr(metav1.StatusReasonForbidden)}},
			},
		}
	}
	objs := []any{
		policy(VolumeGuardBindings[0], "pods",
			"!has(object.spec.volumes) || object.spec.volumes.all(v, !("+hasAny("v")+"))",
			"'volume ' + object.spec.volumes.filter(v, "+hasAny("v")+").map(v, v.name).join(', ') + ' of pod ' + object.metadata.name + '"+whyNot),
		policy(VolumeGuardBindings[1], "persistentvolumes",
			"!("+hasAny("object.spec")+")",
			"'PersistentVolume ' + object.metadata.name + '"+whyNot),
	}
	actions := map[string][]admissionv1.ValidationAction{"deny": {admissionv1.Deny}, "warn": {admissionv1.Warn}}[mode]
	if actions == nil {
		return objs
	}
	for _, name := range VolumeGuardBindings {
		objs = append(objs, admissionv1.ValidatingAdmissionPolicyBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: actions},
		})
	}
	return objs
}

func ptr[T any](v T) *T { return &v }
