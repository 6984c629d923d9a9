package main

// The rules a cluster enforces only at reconcile time (or never, silently): references that
// must resolve among the objects applied together, the Kafka broker class, the effective
// delivery of every Trigger, requests within limits, CloudEvent attribute names in filters, and
// the webhooks' update checks against the previous release's objects.

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// The only class the Kafka broker's controller reconciles; anything else (e.g. "kafka") leaves
// the Broker to no controller at all, or to the channel-based one.
const kafkaBrokerClass = "Kafka"

// CloudEvents context attributes (spec v1.0); extensions come from -extension flags.
var coreAttributes = []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}

// Settings of one validation run (flags of validateMain).
var (
	knownExtensions = map[string]bool{}   // empty: filter keys are not checked
	previousObjects = map[string][]byte{} // objKey -> the previous release's JSON
	recreated       = map[string]bool{}   // "Kind/name": deleted and created anew by the upgrade
)

func objKey(apiVersion, kind, namespace, name string) string {
	return strings.Join([]string{apiVersion, kind, namespace, name}, "|")
}

// loadPrevious reads a previous release's render: objects present in both get the webhooks'
// Validate(apis.WithinUpdate(ctx, previous)), which holds the immutable-field rules.
func loadPrevious(data []byte) error {
	docs, err := splitDocuments(data)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		var head unstructuredHead
		if err := sigsyaml.Unmarshal(doc, &head); err != nil {
			return err
		}
		raw, err := sigsyaml.YAMLToJSON(doc)
		if err != nil {
			return err
		}
		previousObjects[objKey(head.APIVersion, head.Kind, head.Metadata.Namespace, head.Metadata.Name)] = raw
	}
	return nil
}

type unstructuredHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// updateBaseline returns the previous release's version of obj, decoded and defaulted, or nil.
func updateBaseline(ctx context.Context, info kindInfo, head unstructuredHead) (metaObject, error) {
	if recreated[head.Kind+"/"+head.Metadata.Name] {
		return nil, nil
	}
	raw, ok := previousObjects[objKey(head.APIVersion, head.Kind, head.Metadata.Namespace, head.Metadata.Name)]
	if !ok {
		return nil, nil
	}
	old := info.newObject()
	if err := sigsyamlUnmarshalJSON(raw, old); err != nil {
		return nil, fmt.Errorf("previous release's %s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	if d, ok := old.(apis.Defaultable); ok {
		d.SetDefaults(apis.WithinCreate(ctx))
	}
	return old, nil
}

// --- per-object rules ---------------------------------------------------------------------------

func brokerClassProblems(broker *eventingv1.Broker) []string {
	class := broker.GetAnnotations()[eventingv1.BrokerClassAnnotationKey]
	if class != kafkaBrokerClass {
		return []string{fmt.Sprintf("annotation %s is %q: the Kafka broker reconciles only %q (exact case)",
			eventingv1.BrokerClassAnnotationKey, class, kafkaBrokerClass)}
	}
	return nil
}

// filterKeyProblems: every attribute a Trigger filters on is a CloudEvents context attribute or
// an extension the events carry; a misspelt key (`tpye`, `autoSync`) silently matches nothing.
func filterKeyProblems(trigger *eventingv1.Trigger) []string {
	if len(knownExtensions) == 0 {
		return nil
	}
	var keys []string
	if trigger.Spec.Filter != nil {
		for k := range trigger.Spec.Filter.Attributes {
			keys = append(keys, "spec.filter.attributes."+k)
		}
	}
	var walk func(path string, f eventingv1.SubscriptionsAPIFilter)
	walk = func(path string, f eventingv1.SubscriptionsAPIFilter) {
		for dialect, m := range map[string]map[string]string{"exact": f.Exact, "prefix": f.Prefix, "suffix": f.Suffix} {
			for k := range m {
				keys = append(keys, path+"."+dialect+"."+k)
			}
		}
		for i, sub := range f.All {
			walk(fmt.Sprintf("%s.all[%d]", path, i), sub)
		}
		for i, sub := range f.Any {
			walk(fmt.Sprintf("%s.any[%d]", path, i), sub)
		}
		if f.Not != nil {
			walk(path+".not", *f.Not)
		}
	}
	for i, f := range trigger.Spec.Filters {
		walk(fmt.Sprintf("spec.filters[%d]", i), f)
	}
	sort.Strings(keys)
	var out []string
	for _, path := range keys {
		name := path[strings.LastIndex(path, ".")+1:]
		if !knownExtensions[name] && !contains(coreAttributes, name) {
			out = append(out, fmt.Sprintf("%s: %q is neither a CloudEvents attribute nor a known extension (%s)",
				path, name, strings.Join(sortedKeys(knownExtensions), ", ")))
		}
	}
	return out
}

// resourceProblems: requests above limits are refused by the API server for Pods, but a Knative
// Service is accepted and its revision never becomes Ready.
func resourceProblems(spec corev1.PodSpec) []string {
	var out []string
	for i, c := range spec.Containers {
		for name, request := range c.Resources.Requests {
			if limit, ok := c.Resources.Limits[name]; ok && request.Cmp(limit) > 0 {
				out = append(out, fmt.Sprintf("spec.template.spec.containers[%d].resources.requests.%s: %s is above the limit %s",
					i, name, request.String(), limit.String()))
			}
		}
	}
	sort.Strings(out)
	return out
}

// probeProblems: the probe forms Knative's queue-proxy runs — one handler, HTTP or TCP or gRPC,
// on the serving port (Knative rejects any other port) and a path starting with "/".
func probeProblems(spec corev1.PodSpec) []string {
	var out []string
	for i, c := range spec.Containers {
		for name, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe,
			"startupProbe": c.StartupProbe} {
			if p == nil {
				continue
			}
			where := fmt.Sprintf("spec.template.spec.containers[%d].%s", i, name)
			if p.Exec != nil {
				out = append(out, where+": exec probes are not run by Knative's queue-proxy; use httpGet")
			}
			if p.HTTPGet != nil && !strings.HasPrefix(p.HTTPGet.Path, "/") {
				out = append(out, fmt.Sprintf("%s.httpGet.path: %q must start with /", where, p.HTTPGet.Path))
			}
		}
	}
	sort.Strings(out)
	return out
}

func serviceCheck(_ context.Context, obj metaObject) []string {
	service := obj.(*servingv1.Service)
	spec := service.Spec.Template.Spec.PodSpec
	return append(resourceProblems(spec), probeProblems(spec)...)
}

func brokerCheck(ctx context.Context, obj metaObject) []string {
	return append(brokerClassProblems(obj.(*eventingv1.Broker)), kafkaBrokerCheck(ctx, obj)...)
}

func triggerCheck(ctx context.Context, obj metaObject) []string {
	return append(kafkaTriggerCheck(ctx, obj), filterKeyProblems(obj.(*eventingv1.Trigger))...)
}

// --- references among the objects applied together --------------------------------------------

type object struct {
	head unstructuredHead
	body map[string]interface{}
}

// referenceProblems resolves every reference of `docs` (one rendered kustomization) against the
// objects in it plus `external` (objects created out of band, e.g. the Secrets). Keyed by the
// index of the document in `docs`.
func referenceProblems(docs [][]byte, external [][]byte) map[int][]string {
	var objects []object
	for _, set := range [][][]byte{docs, external} {
		for _, doc := range set {
			var o object
			_ = sigsyaml.Unmarshal(doc, &o.head)
			_ = sigsyaml.Unmarshal(doc, &o.body)
			objects = append(objects, o)
		}
	}
	has := func(kind, namespace, name string) bool {
		for _, o := range objects {
			if o.head.Kind == kind && o.head.Metadata.Name == name && (namespace == "" || o.head.Metadata.Namespace == namespace) {
				return true
			}
		}
		return false
	}
	problems := map[int][]string{}
	for i := range docs {
		o := objects[i]
		ns := o.head.Metadata.Namespace
		var out []string
		need := func(path, kind, namespace, name string) {
			if name == "" {
				return
			}
			if !has(kind, namespace, name) {
				out = append(out, fmt.Sprintf("%s: %s %s/%s does not exist", path, kind, namespace, name))
			}
		}
		ref := func(path string, r map[string]interface{}) {
			if r == nil {
				return
			}
			refNS, _ := r["namespace"].(string)
			if refNS == "" {
				refNS = ns
			}
			kind, _ := r["kind"].(string)
			name, _ := r["name"].(string)
			need(path, kind, refNS, name)
		}
		if ns != "" && !has("Namespace", "", ns) {
			out = append(out, fmt.Sprintf("metadata.namespace: Namespace %s does not exist", ns))
		}
		spec, _ := o.body["spec"].(map[string]interface{})
		switch o.head.Kind {
		case "Trigger":
			broker, _ := spec["broker"].(string)
			need("spec.broker", "Broker", ns, broker)
			ref("spec.subscriber.ref", dig(spec, "subscriber", "ref"))
			delivery := dig(spec, "delivery")
			ref("spec.delivery.deadLetterSink.ref", dig(delivery, "deadLetterSink", "ref"))
			effective := delivery
			if effective == nil {
				for _, b := range objects {
					if b.head.Kind == "Broker" && b.head.Metadata.Name == broker && b.head.Metadata.Namespace == ns {
						effective = dig(b.body, "spec", "delivery")
					}
				}
			}
			if dig(effective, "deadLetterSink") == nil {
				where := "the Broker's delivery"
				if delivery != nil {
					where = "spec.delivery (it replaces the Broker's, not merged)"
				}
				out = append(out, "effective delivery has no deadLetterSink: "+where+
					" has none, so an exhausted delivery is dropped")
			} else if n, _ := effective["retry"].(float64); n < 1 {
				out = append(out, "effective delivery has no retry: one failed attempt goes to the dead-letter sink")
			}
		case "Broker":
			ref("spec.config", dig(spec, "config"))
			ref("spec.delivery.deadLetterSink.ref", dig(spec, "delivery", "deadLetterSink", "ref"))
		case "KafkaSource", "PingSource", "SinkBinding", "ApiServerSource", "ContainerSource":
			ref("spec.sink.ref", dig(spec, "sink", "ref"))
		case "RoleBinding":
			if r := dig(o.body, "roleRef"); r != nil {
				ref("roleRef", map[string]interface{}{"kind": r["kind"], "name": r["name"]})
			}
			subjects, _ := o.body["subjects"].([]interface{})
			for j, s := range subjects {
				if m, _ := s.(map[string]interface{}); m != nil && m["kind"] == "ServiceAccount" {
					ref(fmt.Sprintf("subjects[%d]", j), m)
				}
			}
		case "Service":
			if !strings.HasPrefix(o.head.APIVersion, "serving.knative.dev/") {
				break
			}
			pod := dig(spec, "template", "spec")
			if sa, _ := pod["serviceAccountName"].(string); sa != "" {
				need("spec.template.spec.serviceAccountName", "ServiceAccount", ns, sa)
			}
			out = append(out, podReferences(pod, func(path, kind, name string) { need(path, kind, ns, name) })...)
		}
		if len(out) > 0 {
			problems[i] = out
		}
	}
	return problems
}

func podReferences(pod map[string]interface{}, need func(path, kind, name string)) []string {
	containers, _ := pod["containers"].([]interface{})
	for i, c := range containers {
		container, _ := c.(map[string]interface{})
		from, _ := container["envFrom"].([]interface{})
		for j, f := range from {
			entry, _ := f.(map[string]interface{})
			for field, kind := range map[string]string{"secretRef": "Secret", "configMapRef": "ConfigMap"} {
				if r := dig(entry, field); r != nil && r["optional"] != true {
					name, _ := r["name"].(string)
					need(fmt.Sprintf("spec.template.spec.containers[%d].envFrom[%d].%s", i, j, field), kind, name)
				}
			}
		}
		env, _ := container["env"].([]interface{})
		for j, e := range env {
			entry, _ := e.(map[string]interface{})
			for field, kind := range map[string]string{"secretKeyRef": "Secret", "configMapKeyRef": "ConfigMap"} {
				if r := dig(entry, "valueFrom", field); r != nil && r["optional"] != true {
					name, _ := r["name"].(string)
					need(fmt.Sprintf("spec.template.spec.containers[%d].env[%d].valueFrom.%s", i, j, field), kind, name)
				}
			}
		}
	}
	volumes, _ := pod["volumes"].([]interface{})
	for i, v := range volumes {
		volume, _ := v.(map[string]interface{})
		if s := dig(volume, "secret"); s != nil && s["optional"] != true {
			name, _ := s["secretName"].(string)
			need(fmt.Sprintf("spec.template.spec.volumes[%d].secret", i), "Secret", name)
		}
		if c := dig(volume, "configMap"); c != nil && c["optional"] != true {
			name, _ := c["name"].(string)
			need(fmt.Sprintf("spec.template.spec.volumes[%d].configMap", i), "ConfigMap", name)
		}
	}
	return nil
}

func dig(m map[string]interface{}, path ...string) map[string]interface{} {
	for _, p := range path {
		if m == nil {
			return nil
		}
		m, _ = m[p].(map[string]interface{})
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
