/**
 * Trace analysis: pick one generation request out of a span file (the JSON lines the services write
 * with DSI_TRACE_FILE), build its timeline, summarise it, draw it as SVG or HTML. Pure: span records
 * in, text out; the caller reads and writes the files.
 */
export { TraceInputError } from './errors';
export { listRequests, selectRequest, type RequestInfo, type TraceSelection } from './select';
export {
  buildTimeline,
  unionMs,
  type TimelineBar,
  type TimelineFrontierPoint,
  type TimelineInterval,
  type TimelineLane,
  type TimelineModel,
  type TimelinePreemption,
} from './model';
export { formatSummary, summarize, type TraceSummary } from './summary';
export { TIMELINE_COLOURS, timelineSvg } from './svg';
export { timelineHtml } from './html';
