package tune

import (
	"encoding/json"
	"io"
)

// jsonReport is the shape of --json: the same facts as the text report.
type jsonReport struct {
	Cluster string   `json:"cluster"`
	Mode    string   `json:"mode"`
	Metric  string   `json:"metric"`
	Files   []string `json:"files"`
	Input   struct {
		Lines     int64    `json:"lines"`
		Requests  uint64   `json:"requests"`
		Bytes     uint64   `json:"bytes"`
		Clients   int      `json:"clients"`
		Blank     int64    `json:"blank"`
		Malformed int64    `json:"malformed"`
		Examples  []string `json:"malformed_examples,omitempty"`
	} `json:"input"`
	Current     jsonSetting  `json:"current"`
	BestFound   jsonSetting  `json:"best_found_in_sample"`
	Candidates  int          `json:"candidates"`
	Floor       float64      `json:"heaviest_client_floor"`
	HoldOut     *jsonHoldOut `json:"held_out,omitempty"`
	Recommended jsonSetting  `json:"recommended"`
	Changed     bool         `json:"recommends_change"`
	Pins        []jsonPin    `json:"recommended_pins"`
}

type jsonPin struct {
	Client   string `json:"client"`
	Server   int    `json:"server"`
	Requests uint64 `json:"requests"`
	Bytes    uint64 `json:"bytes"`
}

type jsonPins struct {
	Base     jsonSetting `json:"on_top_of"`
	Unpinned jsonSpread  `json:"without_pins"`
	Pinned   jsonSpread  `json:"with_pins"`
	Gain     jsonSpread  `json:"gain"`
	Reliable bool        `json:"reliable"`
	Why      string      `json:"why,omitempty"`
	Chosen   []jsonPin   `json:"chosen"`
}

type jsonSetting struct {
	Hash    string  `json:"hash"`
	Seed    uint32  `json:"seed"`
	Buckets int     `json:"buckets"`
	MaxMean float64 `json:"max_mean_in_sample,omitempty"`
	CV      float64 `json:"cv_in_sample,omitempty"`
}

type jsonSpread struct {
	Mean float64 `json:"mean"`
	SD   float64 `json:"sd"`
}

type jsonFold struct {
	TrainFrom  int64       `json:"train_from"`
	TrainTo    int64       `json:"train_to"`
	TestFrom   int64       `json:"test_from"`
	TestTo     int64       `json:"test_to"`
	Chosen     jsonSetting `json:"chosen"`
	Fitted     float64     `json:"fitted_max_mean"`
	Current    float64     `json:"current_max_mean"`
	Searched   float64     `json:"searched_max_mean"`
	Random     jsonSpread  `json:"random_seeds_max_mean"`
	Floor      float64     `json:"floor"`
	NewHeavy   int         `json:"new_heavy"`
	HeavyCount int         `json:"heavy"`
	Pins       int         `json:"pins"`
	Unpinned   float64     `json:"unpinned_max_mean"`
	Pinned     float64     `json:"pinned_max_mean"`
}

type jsonHoldOut struct {
	Windows  int        `json:"windows"`
	Untimed  uint64     `json:"untimed_requests"`
	Folds    []jsonFold `json:"folds"`
	Current  jsonSpread `json:"current"`
	Searched jsonSpread `json:"searched"`
	Random   jsonSpread `json:"random_seeds"`
	Gain     jsonSpread `json:"gain"`
	Reliable bool       `json:"reliable"`
	Why      []string   `json:"why,omitempty"`
	Pins     *jsonPins  `json:"pins,omitempty"`
}

func setting(c Candidate) jsonSetting {
	return jsonSetting{Hash: c.Hash, Seed: c.Seed, Buckets: c.Buckets}
}

func spreadJSON(s Spread) jsonSpread { return jsonSpread(s) }

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	var j jsonReport
	e, s, pop := r.Eval, &r.Search, r.Pop
	j.Cluster, j.Mode, j.Metric, j.Files = r.Cluster, r.Mode, e.Metric().String(), r.Files
	j.Input.Lines, j.Input.Requests, j.Input.Bytes = pop.Lines, pop.Requests, pop.Bytes
	j.Input.Clients, j.Input.Blank, j.Input.Malformed = len(pop.Clients), pop.Blank, pop.Malformed
	for _, m := range pop.Examples {
		j.Input.Examples = append(j.Input.Examples, m.String())
	}
	j.Current = setting(s.Current.Candidate)
	j.Current.MaxMean, j.Current.CV = s.Current.Score(e.Metric()).MaxMean, s.Current.Score(e.Metric()).CV
	j.BestFound = setting(s.Best.Candidate)
	j.BestFound.MaxMean, j.BestFound.CV = s.Best.Score(e.Metric()).MaxMean, s.Best.Score(e.Metric()).CV
	j.Candidates = s.Candidates
	j.Floor = e.LowerBound().MaxMean
	if h := r.HoldOut; h != nil {
		jh := &jsonHoldOut{Windows: h.Windows, Untimed: h.Untimed, Current: spreadJSON(h.Current),
			Searched: spreadJSON(h.Searched), Random: spreadJSON(h.Random), Gain: spreadJSON(h.Gain),
			Reliable: h.Reliable, Why: h.Why, Folds: []jsonFold{}}
		for _, f := range h.Folds {
			jh.Folds = append(jh.Folds, jsonFold{TrainFrom: f.TrainFrom, TrainTo: f.TrainTo, TestFrom: f.TestFrom,
				TestTo: f.TestTo, Chosen: setting(f.Chosen), Fitted: f.InSample, Current: f.Current,
				Searched: f.Searched, Random: jsonSpread{f.RandomMean, f.RandomSD}, Floor: f.Floor,
				NewHeavy: f.NewHeavy, HeavyCount: f.Heavy, Pins: f.Pins, Unpinned: f.Unpinned, Pinned: f.Pinned})
		}
		if o := h.Pins; o != nil {
			jh.Pins = &jsonPins{Base: setting(o.Base), Unpinned: spreadJSON(o.Unpinned), Pinned: spreadJSON(o.Pinned), Gain: spreadJSON(o.Gain), Reliable: o.Reliable, Why: o.Why, Chosen: pinsJSON(o.Pins)}
		}
		j.HoldOut = jh
	}
	j.Pins = pinsJSON(r.Pins)
	j.Recommended = setting(r.Recommended)
	j.Changed = r.Recommended != s.Current.Candidate
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

func pinsJSON(ps []PinChoice) []jsonPin {
	out := []jsonPin{}
	for _, p := range ps {
		out = append(out, jsonPin{Client: p.Client.Addr.String(), Server: p.ID, Requests: p.Client.Requests, Bytes: p.Client.Bytes})
	}
	return out
}
