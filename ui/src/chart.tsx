import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

/** A time-series line chart (uPlot): x in ms since the epoch, one or more series. */
export function LineChart(props: {
  label: string;
  x: number[];
  series: { label: string; values: number[]; unit?: string }[];
  height?: number;
  /** The x range to show (ms), e.g. the chosen window; default: the data's. */
  xRange?: [number, number];
  /** How y values read, e.g. bytes per second. */
  format?: (v: number) => string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const colors = ["#0b5cad", "#b3261e", "#17702c", "#8a5a00"];
    const plot = new uPlot(
      {
        width: Math.max(280, el.clientWidth),
        height: props.height ?? 220,
        series: [
          {},
          ...props.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 2, points: { show: props.x.length < 60 } })),
        ],
        scales: props.xRange ? { x: { time: true, range: [props.xRange[0] / 1000, props.xRange[1] / 1000] } } : undefined,
        axes: [
          {},
          {
            size: 80,
            values: (_u: uPlot, ticks: number[]) => ticks.map((t) => (props.format ? props.format(t) : `${t}${props.series[0]?.unit ?? ""}`)),
          },
        ],
      },
      [props.x.map((t) => t / 1000), ...props.series.map((s) => s.values)],
      el,
    );
    const resize = () => plot.setSize({ width: Math.max(280, el.clientWidth), height: props.height ?? 220 });
    addEventListener("resize", resize);
    return () => {
      removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [props.x, props.series]);
  return <div class="chart" ref={box} role="img" aria-label={props.label} />;
}
