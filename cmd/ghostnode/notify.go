package main

import (
	"log/slog"

	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
)

// notifier is the systemd notification socket of `ghostnode run`, or one
// that does nothing when not started as a Type=notify service.
func notifier(log *slog.Logger) *sdnotify.Notifier {
	sd, err := sdnotify.FromEnv()
	if err != nil {
		log.Error("systemd notification disabled", "err", err)
		return &sdnotify.Notifier{}
	}
	return sd
}

// notify sends a notification, logging a failure.
func notify(sd *sdnotify.Notifier, log *slog.Logger, assignments ...string) {
	if err := sd.Send(assignments...); err != nil {
		log.Error("systemd notification", "err", err)
	}
}
