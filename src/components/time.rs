//! Times as people read them, in the browser's time zone.

/// "14:05" today, "Mon" this week, "21 Nov" before.
pub fn short_time(timestamp: &str, now_ms: f64) -> String {
    let Some(ms) = crate::clock::timestamp_ms(timestamp) else { return String::new() };
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    let now = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(now_ms));
    let same_day = date.get_full_year() == now.get_full_year()
        && date.get_month() == now.get_month()
        && date.get_date() == now.get_date();
    if same_day {
        return clock(&date);
    }
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    if now_ms - (ms as f64) < 6.0 * 86_400_000.0 {
        DAYS[date.get_day() as usize % 7].to_owned()
    } else {
        format!("{} {}", date.get_date(), MONTHS[date.get_month() as usize % 12])
    }
}

/// "14:05" in local time.
pub fn clock_time(timestamp: &str) -> String {
    let Some(ms) = crate::clock::timestamp_ms(timestamp) else { return String::new() };
    clock(&js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64)))
}

fn clock(date: &js_sys::Date) -> String {
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
