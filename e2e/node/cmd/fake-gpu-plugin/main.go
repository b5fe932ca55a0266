// Command fake-gpu-plugin is a kubelet device plugin that advertises
// nvidia.com/gpu devices which do not exist, so that GPU scheduling can be
// tested on machines without GPUs. A container that is allocated devices gets
// the environment the NVIDIA device plugin would give it
// (NVIDIA_VISIBLE_DEVICES with the device IDs), and nothing else.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	// The fake devices never change health: hold the stream open until the
	// kubelet closes it.
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{
				"NVIDIA_VISIBLE_DEVICES":     strings.Join(c.DevicesIds, ","),
				"NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
				"KILN_FAKE_GPU":              "true",
			},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func main() {
	count := flag.Int("count", 1, "number of fake GPUs to advertise")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	node := flag.String("node", "", "node name, part of the device IDs")
	flag.Parse()
	if *count < 1 {
		log.Fatal("--count must be at least 1")
	}
	p := &plugin{}
	for i := 0; i < *count; i++ {
		id := fmt.Sprintf("GPU-fake-%s-%d", *node, i)
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	// The kubelet forgets plugins when it restarts (it removes the socket
	// folder's contents): serve, register, and start over whenever our socket
	// disappears.
	for {
		if err := serveOnce(p, *resource); err != nil {
			log.Printf("device plugin: %v; retrying", err)
		}
		time.Sleep(2 * time.Second)
	}
}

func serveOnce(p *plugin, resource string) error {
	endpoint := "kiln-fake-gpu.sock"
	sock := filepath.Join(pluginapi.DevicePluginPath, endpoint)
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("unix://"+pluginapi.KubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
	})
	if err != nil {
		return fmt.Errorf("register with the kubelet: %w", err)
	}
	log.Printf("registered %d %s devices", len(p.devices), resource)
	for {
		time.Sleep(5 * time.Second)
		if _, err := os.Stat(sock); err != nil {
			return fmt.Errorf("socket %s is gone (kubelet restarted)", sock)
		}
	}
}
