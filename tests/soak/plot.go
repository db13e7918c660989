package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotSamples draws RSS and goroutines over time, one above the other, into a PNG file.
func plotSamples(file string, samples []sample, n int, w workload) error {
	rss, goroutines := make(plotter.XYs, len(samples)), make(plotter.XYs, len(samples))
	for i, s := range samples {
		minutes := s.at.Minutes()
		rss[i] = plotter.XY{X: minutes, Y: float64(s.rssKB) / 1024}
		goroutines[i] = plotter.XY{X: minutes, Y: float64(s.goroutines)}
	}
	title := fmt.Sprintf("chorus soak: %d connections, %.0f %% publishing once a second", n, 100*w.publishers)
	top, err := linePlot(title, "RSS (MB)", rss)
	if err != nil {
		return err
	}
	bottom, err := linePlot("", "goroutines", goroutines)
	if err != nil {
		return err
	}
	bottom.X.Label.Text = "minutes after the warm-up"

	const width, height = 8 * vg.Inch, 6 * vg.Inch
	img := vgimg.New(width, height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	if err := savePNG(file, img); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

func linePlot(title, yLabel string, xys plotter.XYs) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Y.Min = 0 // flat is flat only against zero
	p.Add(plotter.NewGrid())
	line, err := plotter.NewLine(xys)
	if err != nil {
		return nil, err
	}
	p.Add(line)
	return p, nil
}

func savePNG(file string, img *vgimg.Canvas) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
