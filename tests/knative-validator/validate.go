package main

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"

	kafkabrokerv1 "knative.dev/eventing-kafka-broker/control-plane/pkg/apis/eventing/v1"
	kafkaeventingv1alpha1 "knative.dev/eventing-kafka-broker/control-plane/pkg/apis/eventing/v1alpha1"
	kafkasourcesv1beta1 "knative.dev/eventing-kafka-broker/control-plane/pkg/apis/sources/v1beta1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/logging"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// The Kafka broker reads this Trigger annotation (its reconciler rejects other values).
const deliveryOrderAnnotation = "kafka.eventing.knative.dev/delivery.order"

// Finding is one result for one object: level "ok", "warning" or "error".
type Finding struct {
	Source  string `json:"source"`
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Level   string `json:"level"`
	Message string `json:"message"`
}

type metaObject interface {
	metav1.Object
}

type kindInfo struct {
	knative    bool // validated by Knative's SetDefaults/Validate; else strict decoding + metadata
	clustered  bool // cluster-scoped: no namespace
	newObject  func() metaObject
	extraCheck func(ctx context.Context, obj metaObject) []string
}

// kinds maps every apiVersion/kind the manifests may hold to its Go type. A kind missing here is
// an error: a manifest the validator cannot read is a manifest nobody checked.
var kinds = map[schema.GroupVersionKind]kindInfo{
	// Knative Serving
	gvk("serving.knative.dev/v1", "Service"):       {knative: true, newObject: func() metaObject { return &servingv1.Service{} }, extraCheck: serviceCheck},
	gvk("serving.knative.dev/v1", "Configuration"): {knative: true, newObject: func() metaObject { return &servingv1.Configuration{} }},
	gvk("serving.knative.dev/v1", "Route"):         {knative: true, newObject: func() metaObject { return &servingv1.Route{} }},
	// Knative Eventing
	gvk("eventing.knative.dev/v1", "Broker"):         {knative: true, newObject: func() metaObject { return &eventingv1.Broker{} }, extraCheck: brokerCheck},
	gvk("eventing.knative.dev/v1", "Trigger"):        {knative: true, newObject: func() metaObject { return &eventingv1.Trigger{} }, extraCheck: triggerCheck},
	gvk("sources.knative.dev/v1", "PingSource"):      {knative: true, newObject: func() metaObject { return &sourcesv1.PingSource{} }},
	gvk("sources.knative.dev/v1", "SinkBinding"):     {knative: true, newObject: func() metaObject { return &sourcesv1.SinkBinding{} }},
	gvk("sources.knative.dev/v1", "ApiServerSource"): {knative: true, newObject: func() metaObject { return &sourcesv1.ApiServerSource{} }},
	gvk("sources.knative.dev/v1", "ContainerSource"): {knative: true, newObject: func() metaObject { return &sourcesv1.ContainerSource{} }},
	// Knative Eventing Kafka broker
	gvk("eventing.knative.dev/v1alpha1", "KafkaSink"): {knative: true, newObject: func() metaObject { return &kafkaeventingv1alpha1.KafkaSink{} }},
	gvk("sources.knative.dev/v1beta1", "KafkaSource"): {knative: true, newObject: func() metaObject { return &kafkasourcesv1beta1.KafkaSource{} }},
	// Kubernetes
	gvk("v1", "Namespace"):                                    {clustered: true, newObject: func() metaObject { return &corev1.Namespace{} }},
	gvk("v1", "ConfigMap"):                                    {newObject: func() metaObject { return &corev1.ConfigMap{} }, extraCheck: configMapCheck},
	gvk("v1", "Secret"):                                       {newObject: func() metaObject { return &corev1.Secret{} }, extraCheck: secretCheck},
	gvk("v1", "ServiceAccount"):                               {newObject: func() metaObject { return &corev1.ServiceAccount{} }},
	gvk("v1", "Service"):                                      {newObject: func() metaObject { return &corev1.Service{} }},
	gvk("rbac.authorization.k8s.io/v1", "Role"):               {newObject: func() metaObject { return &rbacv1.Role{} }, extraCheck: roleCheck},
	gvk("rbac.authorization.k8s.io/v1", "RoleBinding"):        {newObject: func() metaObject { return &rbacv1.RoleBinding{} }, extraCheck: roleBindingCheck},
	gvk("rbac.authorization.k8s.io/v1", "ClusterRole"):        {clustered: true, newObject: func() metaObject { return &rbacv1.ClusterRole{} }, extraCheck: roleCheck},
	gvk("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {clustered: true, newObject: func() metaObject { return &rbacv1.ClusterRoleBinding{} }},
	gvk("networking.k8s.io/v1", "NetworkPolicy"):              {newObject: func() metaObject { return &networkingv1.NetworkPolicy{} }, extraCheck: networkPolicyCheck},
	gvk("batch/v1", "CronJob"):                                {newObject: func() metaObject { return &batchv1.CronJob{} }},
	gvk("batch/v1", "Job"):                                    {newObject: func() metaObject { return &batchv1.Job{} }},
	gvk("apps/v1", "Deployment"):                              {newObject: func() metaObject { return &appsv1.Deployment{} }},
	gvk("apps/v1", "StatefulSet"):                             {newObject: func() metaObject { return &appsv1.StatefulSet{} }},
}

func gvk(apiVersion, kind string) schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(apiVersion, kind)
}

// validationContext is what the Knative webhooks see on create, with the eventing feature flags
// of a cluster: the release's defaults, then the flags the manifests need.
func validationContext(flags map[string]string) (context.Context, error) {
	ctx := logging.WithLogger(context.Background(), zap.NewNop().Sugar())
	features, err := feature.NewFlagsConfigFromMap(flags)
	if err != nil {
		return nil, fmt.Errorf("eventing feature flags: %w", err)
	}
	return feature.ToContext(ctx, features), nil
}

// validateDocument decodes one YAML document strictly and validates it.
func validateDocument(ctx context.Context, source string, doc []byte) Finding {
	finding := Finding{Source: source, Level: "error"}
	var head unstructuredHead
	data, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		finding.Message = "invalid YAML: " + err.Error()
		return finding
	}
	if err := sigsyaml.Unmarshal(doc, &head); err != nil {
		finding.Message = "invalid YAML: " + err.Error()
		return finding
	}
	finding.Kind = strings.TrimPrefix(head.APIVersion+" "+head.Kind, " ")
	finding.Name = head.Metadata.Name
	if head.APIVersion == "" || head.Kind == "" {
		finding.Message = "missing apiVersion or kind"
		return finding
	}
	info, known := kinds[gvk(head.APIVersion, head.Kind)]
	if !known {
		finding.Message = fmt.Sprintf("no schema known for %s %s: add its Go type to the validator", head.APIVersion, head.Kind)
		return finding
	}
	obj := info.newObject()
	strictErrs, err := sigsjson.UnmarshalStrict(data, obj)
	if err != nil {
		finding.Message = "decoding: " + err.Error()
		return finding
	}
	var problems, warnings []string
	for _, e := range strictErrs {
		problems = append(problems, "strict decoding: "+e.Error())
	}
	problems = append(problems, metadataProblems(obj, info.clustered)...)

	createCtx := apis.WithinCreate(ctx)
	if info.knative {
		// An object the previous release had is validated as the update it is (immutable fields).
		old, err := updateBaseline(ctx, info, head)
		if err != nil {
			problems = append(problems, err.Error())
		} else if old != nil {
			createCtx = apis.WithinUpdate(ctx, old)
		}
		if d, ok := obj.(apis.Defaultable); ok {
			d.SetDefaults(createCtx)
		}
		if v, ok := obj.(apis.Validatable); ok {
			if fe := v.Validate(createCtx); fe != nil {
				if errs := fe.Filter(apis.ErrorLevel); errs != nil {
					problems = append(problems, splitLines(errs.Error())...)
				}
				if warns := fe.Filter(apis.WarningLevel); warns != nil {
					warnings = append(warnings, splitLines(warns.Error())...)
				}
			}
		}
	}
	if info.extraCheck != nil {
		problems = append(problems, info.extraCheck(createCtx, obj)...)
	}
	switch {
	case len(problems) > 0:
		finding.Message = strings.Join(problems, "; ")
	case len(warnings) > 0:
		finding.Level, finding.Message = "warning", strings.Join(warnings, "; ")
	default:
		finding.Level = "ok"
	}
	return finding
}

func splitLines(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func fieldErrors(list field.ErrorList) []string {
	var out []string
	for _, e := range list {
		out = append(out, e.Error())
	}
	return out
}

// metadataProblems is the API server's own check of names, namespaces, labels and annotations.
func metadataProblems(obj metaObject, clustered bool) []string {
	meta := metav1.ObjectMeta{
		Name: obj.GetName(), Namespace: obj.GetNamespace(),
		Labels: obj.GetLabels(), Annotations: obj.GetAnnotations(),
	}
	return fieldErrors(apivalidation.ValidateObjectMeta(&meta, !clustered && meta.Namespace != "",
		apivalidation.NameIsDNSSubdomain, field.NewPath("metadata")))
}

// kafkaBrokerCheck runs the Kafka broker's own webhook on a Kafka-class Broker.
func kafkaBrokerCheck(ctx context.Context, obj metaObject) []string {
	broker := obj.(*eventingv1.Broker)
	stub := &kafkabrokerv1.BrokerStub{ObjectMeta: broker.ObjectMeta, Spec: broker.Spec}
	if fe := stub.Validate(ctx); fe != nil {
		if errs := fe.Filter(apis.ErrorLevel); errs != nil {
			return splitLines(errs.Error())
		}
	}
	return nil
}

// kafkaTriggerCheck applies the Kafka broker's rule for the delivery-order annotation.
func kafkaTriggerCheck(_ context.Context, obj metaObject) []string {
	value, set := obj.GetAnnotations()[deliveryOrderAnnotation]
	if !set {
		return nil
	}
	switch kafkasourcesv1beta1.DeliveryOrdering(strings.ToLower(value)) {
	case kafkasourcesv1beta1.Ordered, kafkasourcesv1beta1.Unordered:
		return nil
	}
	return []string{fmt.Sprintf("invalid annotation %s value: %q: expected %q or %q", deliveryOrderAnnotation,
		value, kafkasourcesv1beta1.Ordered, kafkasourcesv1beta1.Unordered)}
}

func keyProblems(what string, keys []string) []string {
	sort.Strings(keys)
	var out []string
	for _, key := range keys {
		for _, msg := range validation.IsConfigMapKey(key) {
			out = append(out, fmt.Sprintf("%s key %q: %s", what, key, msg))
		}
	}
	return out
}

func configMapCheck(_ context.Context, obj metaObject) []string {
	cm := obj.(*corev1.ConfigMap)
	var keys []string
	for k := range cm.Data {
		keys = append(keys, k)
	}
	for k := range cm.BinaryData {
		if _, dup := cm.Data[k]; dup {
			return []string{fmt.Sprintf("key %q is in both data and binaryData", k)}
		}
		keys = append(keys, k)
	}
	return keyProblems("data", keys)
}

func secretCheck(_ context.Context, obj metaObject) []string {
	secret := obj.(*corev1.Secret)
	var keys []string
	for k := range secret.Data {
		keys = append(keys, k)
	}
	for k := range secret.StringData {
		keys = append(keys, k)
	}
	return keyProblems("data", keys)
}

var knownVerbs = map[string]bool{"get": true, "list": true, "watch": true, "create": true, "update": true,
	"patch": true, "delete": true, "deletecollection": true, "*": true}

func rulesProblems(rules []rbacv1.PolicyRule) []string {
	var out []string
	for i, rule := range rules {
		if len(rule.Verbs) == 0 {
			out = append(out, fmt.Sprintf("rules[%d].verbs: Required value", i))
		}
		for _, verb := range rule.Verbs {
			if !knownVerbs[verb] {
				out = append(out, fmt.Sprintf("rules[%d].verbs: unknown verb %q", i, verb))
			}
		}
		if len(rule.NonResourceURLs) == 0 && len(rule.Resources) == 0 {
			out = append(out, fmt.Sprintf("rules[%d].resources: Required value", i))
		}
	}
	return out
}

func roleCheck(_ context.Context, obj metaObject) []string {
	switch role := obj.(type) {
	case *rbacv1.Role:
		return rulesProblems(role.Rules)
	case *rbacv1.ClusterRole:
		return rulesProblems(role.Rules)
	}
	return nil
}

func roleBindingCheck(_ context.Context, obj metaObject) []string {
	binding := obj.(*rbacv1.RoleBinding)
	var out []string
	if binding.RoleRef.Kind != "Role" && binding.RoleRef.Kind != "ClusterRole" {
		out = append(out, fmt.Sprintf("roleRef.kind: expected Role or ClusterRole, found %q", binding.RoleRef.Kind))
	}
	if binding.RoleRef.APIGroup != rbacv1.GroupName {
		out = append(out, fmt.Sprintf("roleRef.apiGroup: expected %s, found %q", rbacv1.GroupName, binding.RoleRef.APIGroup))
	}
	if binding.RoleRef.Name == "" {
		out = append(out, "roleRef.name: Required value")
	}
	for i, s := range binding.Subjects {
		if s.Name == "" {
			out = append(out, fmt.Sprintf("subjects[%d].name: Required value", i))
		}
	}
	return out
}

func networkPolicyCheck(_ context.Context, obj metaObject) []string {
	np := obj.(*networkingv1.NetworkPolicy)
	opts := metav1validation.LabelSelectorValidationOptions{}
	var out []string
	out = append(out, fieldErrors(metav1validation.ValidateLabelSelector(&np.Spec.PodSelector, opts, field.NewPath("spec", "podSelector")))...)
	for _, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			out = append(out, fmt.Sprintf("spec.policyTypes: expected Ingress or Egress, found %q", t))
		}
	}
	peers := func(where string, list []networkingv1.NetworkPolicyPeer) {
		for i, p := range list {
			path := field.NewPath("spec", where).Index(i)
			if p.PodSelector != nil {
				out = append(out, fieldErrors(metav1validation.ValidateLabelSelector(p.PodSelector, opts, path.Child("podSelector")))...)
			}
			if p.NamespaceSelector != nil {
				out = append(out, fieldErrors(metav1validation.ValidateLabelSelector(p.NamespaceSelector, opts, path.Child("namespaceSelector")))...)
			}
			if p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil) {
				out = append(out, fmt.Sprintf("%s: ipBlock may not be combined with a selector", path))
			}
			if p.IPBlock != nil {
				_, block, err := net.ParseCIDR(p.IPBlock.CIDR)
				if err != nil {
					out = append(out, fmt.Sprintf("%s.ipBlock.cidr: invalid CIDR %q", path, p.IPBlock.CIDR))
				}
				for _, except := range p.IPBlock.Except {
					_, inner, err := net.ParseCIDR(except)
					if err != nil || block == nil || !block.Contains(inner.IP) {
						out = append(out, fmt.Sprintf("%s.ipBlock.except: %q is not a CIDR inside %q", path, except, p.IPBlock.CIDR))
					}
				}
			}
		}
	}
	ports := func(where string, list []networkingv1.NetworkPolicyPort) {
		for i, p := range list {
			if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP && *p.Protocol != corev1.ProtocolUDP && *p.Protocol != corev1.ProtocolSCTP {
				out = append(out, fmt.Sprintf("spec.%s.ports[%d].protocol: unsupported %q", where, i, *p.Protocol))
			}
			if p.Port != nil && p.Port.IntVal != 0 {
				for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
					out = append(out, fmt.Sprintf("spec.%s.ports[%d].port: %s", where, i, msg))
				}
			}
		}
	}
	for _, rule := range np.Spec.Ingress {
		peers("ingress.from", rule.From)
		ports("ingress", rule.Ports)
	}
	for _, rule := range np.Spec.Egress {
		peers("egress.to", rule.To)
		ports("egress", rule.Ports)
	}
	return out
}
