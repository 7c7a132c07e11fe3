package kubernetes

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meadowrun-go/meadowrun/internal/k8shost"
)

// CleanResult says what Clean removed.
type CleanResult struct {
	// Namespace is where it looked.
	Namespace string
	// Jobs and Pods are the names of what it removed.
	Jobs, Pods []string
}

// Clean removes every Job and pod that meadowrun created in the namespace
// of opts (label meadowrun.dev/managed), whoever created them, running or
// idle: work running there fails. It is `meadowrun k8s clean`.
func Clean(ctx context.Context, opts Options) (CleanResult, error) {
	h, err := k8shost.New(ctx, k8shost.Options{KubeConfig: opts.KubeConfig, Context: opts.Context, Namespace: opts.Namespace, Log: opts.Log})
	if err != nil {
		return CleanResult{}, fmt.Errorf("meadowrun: %w", err)
	}
	defer h.Close()
	cs, ns := h.Client(), h.Namespace()
	res := CleanResult{Namespace: ns}
	sel := metav1.ListOptions{LabelSelector: k8shost.LabelManaged + "=true"}
	bg := metav1.DeletePropagationBackground
	grace := int64(0)
	del := metav1.DeleteOptions{PropagationPolicy: &bg, GracePeriodSeconds: &grace}
	jobs, err := cs.BatchV1().Jobs(ns).List(ctx, sel)
	if err != nil {
		return res, fmt.Errorf("meadowrun: kubernetes: listing Jobs in %s: %w", ns, err)
	}
	for _, j := range jobs.Items {
		if err := cs.BatchV1().Jobs(ns).Delete(ctx, j.Name, del); err == nil {
			res.Jobs = append(res.Jobs, j.Name)
		}
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		return res, fmt.Errorf("meadowrun: kubernetes: listing pods in %s: %w", ns, err)
	}
	for _, p := range pods.Items {
		if err := cs.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err == nil {
			res.Pods = append(res.Pods, p.Name)
		}
	}
	return res, nil
}
