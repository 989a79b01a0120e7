package kafkaio

// The one vocabulary of permanent-error reasons: what a quarantine record's
// and a dead letter's reason says, and the value of the reason attribute of
// the quarantine and dead-letter metrics. Every Permanent error names one of
// these (a test in this package rejects a literal reason anywhere in the
// code); a new reason is added here, with its meaning, and in the contract.
const (
	// ReasonUndecodableRecord: the record's value is not what its topic
	// carries (not a raw webhook record, not a FeedbackEvent).
	ReasonUndecodableRecord = "undecodable_record"
	// ReasonUnencodableEvent: an event could not be encoded for its next
	// topic or destination.
	ReasonUnencodableEvent = "unencodable_event"
	// ReasonRecordTooLarge: the record does not fit in its topic's
	// max.message.bytes.
	ReasonRecordTooLarge = "record_too_large"
	// ReasonMalformedJSON: the webhook body is not JSON.
	ReasonMalformedJSON = "malformed_json"
	// ReasonMissingID: the payload lacks the id the event is keyed on.
	ReasonMissingID = "missing_required_id"
	// ReasonScoreOutOfScale: a score outside its scale.
	ReasonScoreOutOfScale = "score_out_of_scale"
	// ReasonUnknownProvider: the record names a provider nothing maps.
	ReasonUnknownProvider = "unknown_provider"
	// ReasonInvalidField: a field has a value of the wrong type or form.
	ReasonInvalidField = "invalid_field"
	// ReasonHandlerPanic: the stage's handler panicked on the record (a bug:
	// the record is kept for a replay after the fix).
	ReasonHandlerPanic = "handler_panic"
	// ReasonTemplate: a destination's template cannot render the event.
	ReasonTemplate = "template_error"
)

// Reasons lists every reason, for tests and documentation.
var Reasons = []string{ReasonUndecodableRecord, ReasonUnencodableEvent, ReasonRecordTooLarge, ReasonMalformedJSON, ReasonMissingID,
	ReasonScoreOutOfScale, ReasonUnknownProvider, ReasonInvalidField, ReasonHandlerPanic, ReasonTemplate}
