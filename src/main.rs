fn main() {
    // Panic messages in the console for development builds only: in release the hook and the
    // formatting it pulls in cost more than they tell (a release panic aborts anyway).
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(persona_chat::app::App);
}
