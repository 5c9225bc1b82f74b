// Command gen_go_types writes crates/apiserver/src/go_types.json: for every built-in kind vkube
// serves, the Go types kube-apiserver decodes its JSON into (struct fields by JSON name, slices,
// maps, scalars, and the types that decode themselves), so that vkube refuses a wrongly typed
// field with the message Go's decoder gives ("json: cannot unmarshal string into Go struct field
// DeploymentSpec.spec.replicas of type int32"). Run: cd tools/gen_go_types && go run . > ../../crates/apiserver/src/go_types.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Type is one Go type as the decoder sees it (pointers followed).
type Type struct {
	Go     string            `json:"go"`
	Kind   string            `json:"kind"`
	Fields map[string]string `json:"fields,omitempty"`
	Elem   string            `json:"elem,omitempty"`
}

var (
	types    = map[string]*Type{}
	selfDecs = map[reflect.Type]string{
		reflect.TypeOf(resource.Quantity{}):    "quantity",
		reflect.TypeOf(intstr.IntOrString{}):   "intorstring",
		reflect.TypeOf(metav1.Time{}):          "time",
		reflect.TypeOf(metav1.MicroTime{}):     "time",
		reflect.TypeOf(runtime.RawExtension{}): "any",
	}
	unmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
)

// id names t as OpenAPI names definitions (io.k8s.api.core.v1.Pod) or as Go prints it.
func id(t reflect.Type) string {
	if t.Name() != "" && t.PkgPath() != "" {
		parts := strings.Split(t.PkgPath(), "/")
		host := strings.Split(parts[0], ".")
		for i, j := 0, len(host)-1; i < j; i, j = i+1, j-1 {
			host[i], host[j] = host[j], host[i]
		}
		return strings.Join(append(host, parts[1:]...), ".") + "." + t.Name()
	}
	switch t.Kind() {
	case reflect.Slice:
		return "[]" + id(t.Elem())
	case reflect.Map:
		return "map[" + id(t.Key()) + "]" + id(t.Elem())
	}
	return t.String()
}

func add(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	key := id(t)
	if _, seen := types[key]; seen {
		return key
	}
	entry := &Type{Go: t.String()}
	types[key] = entry
	if kind, ok := selfDecs[t]; ok {
		entry.Kind = kind
		return key
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		// Decodes itself in a way not modelled here: not checked.
		entry.Kind = "any"
		return key
	}
	switch t.Kind() {
	case reflect.Struct:
		entry.Kind = "struct"
		entry.Fields = map[string]string{}
		fields(t, entry.Fields)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			entry.Kind = "bytes"
		} else {
			entry.Kind = "slice"
			entry.Elem = add(t.Elem())
		}
	case reflect.Map:
		entry.Kind = "map"
		entry.Elem = add(t.Elem())
	case reflect.String:
		entry.Kind = "string"
	case reflect.Bool:
		entry.Kind = "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		entry.Kind = "int" + fmt.Sprint(t.Bits())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		entry.Kind = "uint" + fmt.Sprint(t.Bits())
	case reflect.Float32, reflect.Float64:
		entry.Kind = "float"
	default:
		entry.Kind = "any"
	}
	return key
}

func fields(t reflect.Type, into map[string]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name := strings.Split(tag, ",")[0]
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" {
			inner := f.Type
			for inner.Kind() == reflect.Pointer {
				inner = inner.Elem()
			}
			if inner.Kind() == reflect.Struct {
				fields(inner, into)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		into[name] = add(f.Type)
	}
}

func main() {
	kinds := map[string]any{
		"v1/Pod": corev1.Pod{}, "v1/Service": corev1.Service{}, "v1/Endpoints": corev1.Endpoints{},
		"v1/ConfigMap": corev1.ConfigMap{}, "v1/Secret": corev1.Secret{}, "v1/ServiceAccount": corev1.ServiceAccount{},
		"v1/PersistentVolumeClaim": corev1.PersistentVolumeClaim{}, "v1/PersistentVolume": corev1.PersistentVolume{},
		"v1/Node": corev1.Node{}, "v1/Event": corev1.Event{}, "v1/LimitRange": corev1.LimitRange{},
		"v1/ResourceQuota": corev1.ResourceQuota{}, "v1/ReplicationController": corev1.ReplicationController{},
		"v1/Namespace": corev1.Namespace{}, "v1/PodTemplate": corev1.PodTemplate{},
		"apps/v1/Deployment": appsv1.Deployment{}, "apps/v1/ReplicaSet": appsv1.ReplicaSet{},
		"apps/v1/StatefulSet": appsv1.StatefulSet{}, "apps/v1/DaemonSet": appsv1.DaemonSet{},
		"apps/v1/ControllerRevision":               appsv1.ControllerRevision{},
		"autoscaling/v1/HorizontalPodAutoscaler":   autoscalingv1.HorizontalPodAutoscaler{},
		"autoscaling/v2/HorizontalPodAutoscaler":   autoscalingv2.HorizontalPodAutoscaler{},
		"batch/v1/Job":                             batchv1.Job{},
		"batch/v1/CronJob":                         batchv1.CronJob{},
		"networking.k8s.io/v1/Ingress":             networkingv1.Ingress{},
		"networking.k8s.io/v1/IngressClass":        networkingv1.IngressClass{},
		"networking.k8s.io/v1/NetworkPolicy":       networkingv1.NetworkPolicy{},
		"policy/v1/PodDisruptionBudget":            policyv1.PodDisruptionBudget{},
		"scheduling.k8s.io/v1/PriorityClass":       schedulingv1.PriorityClass{},
		"storage.k8s.io/v1/StorageClass":           storagev1.StorageClass{},
		"storage.k8s.io/v1/CSINode":                storagev1.CSINode{},
		"storage.k8s.io/v1/CSIDriver":              storagev1.CSIDriver{},
		"storage.k8s.io/v1/CSIStorageCapacity":     storagev1.CSIStorageCapacity{},
		"storage.k8s.io/v1/VolumeAttachment":       storagev1.VolumeAttachment{},
		"node.k8s.io/v1/RuntimeClass":              nodev1.RuntimeClass{},
		"discovery.k8s.io/v1/EndpointSlice":        discoveryv1.EndpointSlice{},
		"events.k8s.io/v1/Event":                   eventsv1.Event{},
		"coordination.k8s.io/v1/Lease":             coordinationv1.Lease{},
		"flowcontrol.apiserver.k8s.io/v1/FlowSchema": flowcontrolv1.FlowSchema{},
		"flowcontrol.apiserver.k8s.io/v1/PriorityLevelConfiguration":         flowcontrolv1.PriorityLevelConfiguration{},
		"rbac.authorization.k8s.io/v1/Role":                                  rbacv1.Role{},
		"rbac.authorization.k8s.io/v1/RoleBinding":                           rbacv1.RoleBinding{},
		"rbac.authorization.k8s.io/v1/ClusterRole":                           rbacv1.ClusterRole{},
		"rbac.authorization.k8s.io/v1/ClusterRoleBinding":                    rbacv1.ClusterRoleBinding{},
		"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":       admissionregistrationv1.MutatingWebhookConfiguration{},
		"admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration":     admissionregistrationv1.ValidatingWebhookConfiguration{},
		"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":          admissionregistrationv1.ValidatingAdmissionPolicy{},
		"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":   admissionregistrationv1.ValidatingAdmissionPolicyBinding{},
		"apiextensions.k8s.io/v1/CustomResourceDefinition":                   apiextensionsv1.CustomResourceDefinition{},
		"authorization.k8s.io/v1/SelfSubjectAccessReview":                    authorizationv1.SelfSubjectAccessReview{},
		"authorization.k8s.io/v1/SelfSubjectRulesReview":                     authorizationv1.SelfSubjectRulesReview{},
		"authorization.k8s.io/v1/SubjectAccessReview":                        authorizationv1.SubjectAccessReview{},
		"authorization.k8s.io/v1/LocalSubjectAccessReview":                   authorizationv1.LocalSubjectAccessReview{},
		"authentication.k8s.io/v1/TokenReview":                               authenticationv1.TokenReview{},
		"authentication.k8s.io/v1/SelfSubjectReview":                         authenticationv1.SelfSubjectReview{},
		"authentication.k8s.io/v1/TokenRequest":                              authenticationv1.TokenRequest{},
	}
	roots := map[string]string{}
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		roots[name] = add(reflect.TypeOf(kinds[name]))
	}
	out := map[string]any{
		"source": "generated by tools/gen_go_types from k8s.io/api, k8s.io/apimachinery and k8s.io/apiextensions-apiserver v0.33.13",
		"kinds":  roots,
		"types":  types,
	}
	encoder := json.NewEncoder(os.Stdout)
	if err := encoder.Encode(out); err != nil {
		panic(err)
	}
}
